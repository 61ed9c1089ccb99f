"""`parley-eval`: scripted spoken conversations through the real stack (a LiveKit room, or a
phone call into LiveKit SIP), checked turn by turn, with latency budgets and a report."""
