"""Optimization: fastai's Adam (the one optimizer factory), the learning-rate schedules, and the
learning-rate finder."""
