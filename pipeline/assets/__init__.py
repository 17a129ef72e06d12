"""Files shipped inside the package: the embedded default teachers."""

from pathlib import Path

from pipeline.errors import PipelineError

TEACHERS_DIR = Path(__file__).parent / "teachers"
DEFAULT_TEACHER = "resnet20-fmnist"
EMBEDDED_PREFIX = "embedded:"


def embedded_teachers() -> list[str]:
    return sorted(p.stem for p in TEACHERS_DIR.glob("*.pt"))


def embedded_teacher_path(name: str = DEFAULT_TEACHER) -> Path:
    path = TEACHERS_DIR / f"{name}.pt"
    if not path.exists():
        raise PipelineError(f"no embedded teacher {name!r}; embedded: {', '.join(embedded_teachers()) or 'none'}")
    return path


def resolve_teacher(value: str | None) -> Path:
    """None -> the default embedded teacher; 'embedded:NAME' -> that one; anything else is a path."""
    if value is None:
        return embedded_teacher_path()
    if value.startswith(EMBEDDED_PREFIX):
        return embedded_teacher_path(value[len(EMBEDDED_PREFIX) :])
    return Path(value).expanduser()
