"""Model adapters: turn a pool into the arrays strategies ask for (SPEC section 2)."""
