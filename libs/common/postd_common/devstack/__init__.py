"""``make up``: the whole stack on one machine, on embedded defaults."""
