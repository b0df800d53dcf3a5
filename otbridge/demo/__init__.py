"""`otbridge demo`: the simulated plant end to end on the local stack, with a live view."""
