"""Evaluation suite: benchmark loaders, metrics, tasks and reports (numpy only)."""

from .data import DataNotFound, data_root
from .report import to_json, to_markdown
from .tasks import TASKS, TaskResult, run_task

__all__ = ["TASKS", "DataNotFound", "TaskResult", "data_root", "run_task", "to_json", "to_markdown"]
