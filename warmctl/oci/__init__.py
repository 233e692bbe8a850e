"""Registries, signatures and trust: references, the distribution client and its transport, a
snapshot as an OCI artifact, push and pull, cosign signatures, containers-policy.json(5).

Empty on purpose: importing a module of this package must not import the others."""
