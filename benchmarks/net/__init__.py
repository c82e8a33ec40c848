"""The network benchmark group: Python servers on each loop, driven by the compiled netbench client."""
