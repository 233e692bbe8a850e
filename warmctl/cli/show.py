"""warmctl show REF"""

from __future__ import annotations

import typer

from warmctl.cli.options import JsonOption, QuietOption, RefArgument, app_of, output_for


def command(
    ctx: typer.Context,
    ref: RefArgument,
    json_mode: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Show everything recorded about a snapshot, and what its archive says."""
    from warmctl.archive import summarize
    from warmctl.lifecycle.verify import record_disagreements
    from warmctl.provenance import trust_field
    from warmctl.refs import parse_ref
    from warmctl.spec_policy import archive_host_access
    from warmctl.units import format_size

    out = output_for(json_mode, quiet)
    catalogue = app_of(ctx).catalogue()
    snap = catalogue.get(parse_ref(ref))
    with catalogue.hold_archive(snap) as held:
        summary = summarize(held.path)
        host_access = archive_host_access(held.path)
        disagreements = record_disagreements(snap, summary, held.path.stat().st_size)
    if disagreements:
        out.warn(f"{snap.ref}'s archive does not match its record: {'; '.join(disagreements)} "
                 f"(the archive.* lines describe the archive; check it with: warmctl verify "
                 f"{snap.ref})")
    if json_mode:
        out.json({**snap.to_dict(), "archive_contents": summary.to_dict(),
                  "host_access": host_access, "archive_disagreements": disagreements})
        return
    pairs = [
        ("ref", snap.ref),
        ("created", snap.created.isoformat()),
        ("origin", trust_field(snap)),
        ("container", f"{snap.container_name} ({snap.container_id[:12]})"),
        ("image", f"{snap.image_name} ({snap.image_id[:12]})"),
        ("archive", str(snap.archive)),
        ("size", f"{format_size(snap.size_bytes)} ({snap.size_bytes} bytes)"),
        ("sha256", snap.sha256),
        ("compression", snap.compression),
        ("ports", ", ".join(snap.ports) or "-"),
        ("labels", ", ".join(f"{k}={v}" for k, v in snap.labels.items()) or "-"),
    ]
    pairs += [(f"host.{key}", value) for key, value in snap.host.items()]
    pairs += [(f"criu.{key}", str(value)) for key, value in snap.criu_stats.items()]
    for key, value in snap.extra.get("warm", {}).items():
        pairs.append((f"warm.{key}", str(value)))
    for key, value in snap.extra.get("volumes", {}).items():
        if key in ("capture", "frozen_ms"):  # how the volumes were captured (lifecycle/freezer.py)
            pairs.append((f"volumes.{key}", str(value)))
    for key, value in snap.extra.get("pulled", {}).items():
        if key == "signed_by":
            value = (f"{value['key']} ({value['fingerprint']})" if isinstance(value, dict)
                     else "- (not verified)")
        pairs.append((f"pulled.{key}", str(value)))
    pairs += [
        ("archive.image", summary.image_name),
        ("archive.runtime", summary.runtime),
        ("archive.memory", format_size(summary.memory_bytes)),
        ("archive.rootfs_diff", format_size(summary.rootfs_diff_bytes)),
        ("archive.processes", str(summary.process_count)),
        ("host_access", "; ".join(host_access) or "-"),
    ]
    pairs += [(f"volume.{v['name']}", f"{v['destination']}: "
               + (format_size(v["bytes"]) if v["bytes"] is not None else "no content in archive"))
              for v in summary.volumes]
    pairs += [(f"bind_mount.{b['destination']}", f"{b['source']} (host path: not in the archive)")
              for b in summary.bind_mounts]
    out.fields(pairs)
