"""alb: a benchmarking harness for deep active learning."""

__version__ = "0.1.0"
