"""Local tasks: YAML task files that ship with the harness and read local data files.

Neither lm-eval nor lmms-eval resolves a data file relative to its task YAML, so before a run the
harness copies each task directory into the run directory and replaces the literal `{{TASK_DIR}}`
in every YAML file by the absolute path of the original directory. A task therefore writes
`data_files: {test: "{{TASK_DIR}}/my_task.jsonl"}` and works from any working directory.
`{{LM_EVAL_TASKS}}` and `{{LMMS_EVAL_TASKS}}` become the installed tools' task folders, so a
variant of a built-in task is a YAML that `include:`s the built-in one and changes a few keys.
"""

from __future__ import annotations

import shutil
from pathlib import Path

PLACEHOLDER = "{{TASK_DIR}}"


def tool_task_dirs() -> dict[str, str]:
    """`{{LM_EVAL_TASKS}}` / `{{LMMS_EVAL_TASKS}}` → the installed tools' task folders."""
    import lm_eval.tasks
    import lmms_eval.tasks

    return {"{{LM_EVAL_TASKS}}": str(Path(lm_eval.tasks.__file__).resolve().parent),
            "{{LMMS_EVAL_TASKS}}": str(Path(lmms_eval.tasks.__file__).resolve().parent)}


def render_task_dirs(sources: list[Path], dest: Path) -> list[Path]:
    """Copy task directories to `dest/<i>_<name>` with `{{TASK_DIR}}` resolved; return them."""
    out = []
    tools: dict[str, str] = {}
    for i, src in enumerate(sources):
        target = dest / f"{i}_{src.name}"
        shutil.rmtree(target, ignore_errors=True)
        for path in sorted(src.rglob("*")):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            rel = path.relative_to(src)
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            if path.suffix in (".yaml", ".yml"):
                text = path.read_text().replace(PLACEHOLDER, str(path.parent.resolve()))
                if "_EVAL_TASKS}}" in text:
                    tools = tools or tool_task_dirs()  # imported only for a variant
                    for key, value in tools.items():
                        text = text.replace(key, value)
                (target / rel).write_text(text)
            elif path.suffix == ".py":
                shutil.copy2(path, target / rel)
        out.append(target)
    return out
