"""Speed, memory and scale benchmarks for partsearch (`python -m benchmarks <name>`).

Results and the commands that produced them are in docs/BENCHMARKS.md; `benchmarks/gpu.sh` is the
one script to run on a CUDA machine.
"""
