// A small Java HTTP service that builds its state at start (slowly, on purpose) and then
// serves it. Each start draws a new nonce, and a request counter lives in memory: a restored
// service answers with the same nonce and a counter that goes on, a restarted one does not.

import com.sun.net.httpserver.HttpServer;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicLong;

public class StateServer {
    public static void main(String[] args) throws Exception {
        int entries = args.length > 0 ? Integer.parseInt(args[0]) : 300_000;
        String nonce = UUID.randomUUID().toString();
        long started = System.nanoTime();
        Map<Integer, byte[]> state = new HashMap<>();
        MessageDigest sha = MessageDigest.getInstance("SHA-256");
        byte[] value = new byte[32];
        for (int i = 0; i < entries; i++) {
            value = sha.digest(value);
            state.put(i, value);
        }
        long checksum = 0;
        for (int i = 0; i < entries; i++) {
            checksum = checksum * 31 + Arrays.hashCode(state.get(i));
        }
        long buildMillis = (System.nanoTime() - started) / 1_000_000;
        AtomicLong served = new AtomicLong();
        String fixed = String.format(
            "\"nonce\":\"%s\",\"entries\":%d,\"checksum\":%d,\"build_ms\":%d",
            nonce, state.size(), checksum, buildMillis);

        HttpServer server = HttpServer.create(new InetSocketAddress(8080), 0);
        server.createContext("/", exchange -> {
            String body = "{" + fixed + ",\"served\":" + served.incrementAndGet() + "}";
            byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
            exchange.getResponseHeaders().add("Content-Type", "application/json");
            exchange.sendResponseHeaders(200, bytes.length);
            exchange.getResponseBody().write(bytes);
            exchange.close();
        });
        server.start();
    }
}
