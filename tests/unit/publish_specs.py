"""--publish values and podman 4.3.1's verdicts, shared by the unit and integration tests."""

from __future__ import annotations

# podman 4.3.1's answers (`podman create -p SPEC`), measured; the integration test
# test_publish_specs_are_judged_as_podman_judges_them asks the real podman again.
PUBLISH_ACCEPTED = ["80", "8080:80", "127.0.0.1:8080:80", "127.0.0.1::80", "[::1]:8080:80",
                    "80/udp", "80/TCP", "1000-1001:80-81", ":80", "[::1]::80",
                    "0.0.0.0:8080:80/sctp", "080", "65535:65535"]
PUBLISH_REFUSED = ["notaport", "0:80", "8080:0", "70000:80", "1000-1002:80-81", "1000:80-81",
                   "1000-1001:80", "80/foo", "1.2.3:80:80", "127.0.0.1:80", "80-79", "80-80",
                   "localhost:80:80", "8080:80/", "::80", "[::1]:80", "::1:80:80", "1:2:3:4",
                   " 80", "80:", "80/tcp,udp"]
