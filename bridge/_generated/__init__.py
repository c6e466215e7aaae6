"""Generated gRPC code (by make proto); never edit by hand."""
