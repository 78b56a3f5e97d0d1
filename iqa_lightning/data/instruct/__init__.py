"""Instruction data: Q-Instruct conversations, Q-Bench questions, the task mixture and a generator
of both formats from the synthetic set."""
