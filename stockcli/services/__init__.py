"""Services: one module per verb. Plain functions with keyword-only arguments that take settings and
plain values and return frozen dataclasses. They never print, exit or read the environment."""
