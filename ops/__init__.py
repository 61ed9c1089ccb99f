"""Operator CLIs: `parley-sip` (provision LiveKit SIP), `parley-dial` (outbound calls),
`parley-config` (the worker's effective configuration). Not part of the worker image."""
