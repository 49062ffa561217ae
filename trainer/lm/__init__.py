"""Language-model training: the job (training.py), its steps (task.py), the loop that schedules
steps, evaluation, checkpoints and summaries (controller.py), and what guards a run: divergence
and preemption."""
