"""graphopt's tests, one package per wing of the code they test."""
