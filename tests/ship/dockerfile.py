"""Just enough of ``docker build`` to carry out a Dockerfile stage's own instructions here.

The shipping tests build what the images build, so they read the Dockerfiles instead of repeating
their commands: a stage's WORKDIR, ENV, COPY and RUN lines run in a scratch directory that stands in
for the container's filesystem (a *rootfs*), from a build context made with the repository's
``.dockerignore``. The base image is this machine: ``python``, ``make`` and the compilers are the
ones found on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON (exec) form's words, e.g. of ENTRYPOINT or HEALTHCHECK CMD."""
        words = json.loads(self.args)
        assert isinstance(words, list) and all(isinstance(w, str) for w in words), self
        return words

    def flags(self) -> tuple[dict[str, str], list[str]]:
        """``--name=value`` flags first, then the other words (COPY, RUN, HEALTHCHECK)."""
        words = shlex.split(self.args, posix=True)
        flags: dict[str, str] = {}
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            flags[name] = value
        return flags, words

    def command(self) -> str:
        """RUN's shell command without its ``--mount=...``-style flags."""
        rest = self.args
        while rest.startswith("--"):
            rest = rest.partition(" ")[2].lstrip()
        return rest


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        [found] = self.all(keyword)
        return found

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` with the stage's ENV lines applied in order (``${VAR}`` expanded as Docker does)."""
        env = dict(base)
        for instruction in self.all("ENV"):
            for key, value in _env_pairs(instruction.args):
                env[key] = _VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)
        return env

    def workdir(self) -> PurePosixPath:
        return _workdir_after(self.instructions)


def _env_pairs(args: str) -> list[tuple[str, str]]:
    words = shlex.split(args, posix=True)
    if words and "=" not in words[0]:  # the legacy form: ENV KEY value words
        return [(words[0], " ".join(words[1:]))]
    return [(w.partition("=")[0], w.partition("=")[2]) for w in words]


def _workdir_after(instructions: Iterable[Instruction]) -> PurePosixPath:
    workdir = PurePosixPath("/")
    for instruction in instructions:
        if instruction.keyword == "WORKDIR":
            workdir = workdir / instruction.args.strip()
    return workdir


def logical_lines(text: str) -> list[str]:
    """Instructions with their continuation lines joined; comment lines dropped (as Docker does)."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            lines.append(current.strip())
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def parse(path: Path) -> list[Stage]:
    stages: list[Stage] = []
    for line in logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, args))
    return stages


def stage(path: Path, name: str | None = None) -> Stage:
    """The stage called ``name``, or the final stage (the image) when ``name`` is None."""
    stages = parse(path)
    if name is None:
        return stages[-1]
    [found] = [s for s in stages if s.name == name]
    return found


# --- the build context ---


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match plus ``**``) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out += "[" + ("^" + body[1:] if body.startswith("^") else body) + "]"
            i = end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


@dataclass(frozen=True)
class DockerIgnore:
    rules: tuple[tuple[re.Pattern[str], bool], ...]  # (pattern, is an exception "!")

    @classmethod
    def read(cls, path: Path) -> DockerIgnore:
        rules = []
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            exception = line.startswith("!")
            cleaned = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            rules.append((_pattern(cleaned), exception))
        return cls(tuple(rules))

    def ignored(self, relative: str) -> bool:
        """Is the context path ``relative`` (a/b/c) left out? A pattern that matches a parent
        directory leaves out everything below it, unless a later ``!`` pattern brings it back."""
        parts = relative.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for pattern, exception in self.rules:
            if any(pattern.fullmatch(p) for p in prefixes):
                result = not exception
        return result


def build_context(root: Path, dest: Path) -> Path:
    """Copy ``root`` to ``dest`` leaving out what ``root/.dockerignore`` leaves out."""
    ignore = DockerIgnore.read(root / ".dockerignore")
    has_exceptions = any(exception for _, exception in ignore.rules)
    dest.mkdir(parents=True)
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root)
        kept_dirs = []
        for name in dirnames:
            relative = (base / name).as_posix()
            if ignore.ignored(relative) and not has_exceptions:
                continue  # not walked at all (.venv, .git)
            kept_dirs.append(name)
        dirnames[:] = kept_dirs
        for name in filenames:
            relative = (base / name).as_posix()
            if ignore.ignored(relative) or not (Path(dirpath) / name).is_file():
                continue
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(dirpath) / name, target)
    return dest


# --- carrying out a stage ---


@dataclass(frozen=True)
class Rootfs:
    """A directory that stands in for one stage's container filesystem."""

    path: Path

    def host(self, container_path: str | PurePosixPath) -> Path:
        return self.path / str(container_path).lstrip("/")

    def translate(self, value: str, prefixes: Iterable[str]) -> str:
        """``value`` (a path or a colon-separated list) with paths under ``prefixes`` moved in here."""
        prefixes = tuple(prefixes)
        parts = []
        for part in value.split(":"):
            inside = any(part == p or part.startswith(p.rstrip("/") + "/") for p in prefixes)
            parts.append(str(self.host(part)) if inside else part)
        return ":".join(parts)


class BuildError(AssertionError):
    pass


def _copy(sources: list[Path], dest: Path, dest_is_dir: bool, mode: int | None) -> None:
    for source in sources:
        if not source.exists():
            raise BuildError(f"COPY: {source} is not in the build context (see .dockerignore)")
        if source.is_dir():
            shutil.copytree(source, dest, dirs_exist_ok=True)
            copied = [p for p in dest.rglob("*") if p.is_file()]
        else:
            target = dest / source.name if dest_is_dir else dest
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            copied = [target]
        if mode is not None:
            for path in copied:
                path.chmod(mode)


def copy_sources(
    instruction: Instruction,
    context: Path,
    rootfs: Rootfs,
    workdir: PurePosixPath,
    stages: Mapping[str, Rootfs],
) -> None:
    flags, words = instruction.flags()
    if instruction.args.lstrip().startswith("["):
        words = instruction.exec_form()
    *sources, dest = words
    origin = stages[flags["from"]] if "from" in flags else None
    paths: list[Path] = []
    for source in sources:
        if origin is not None:
            paths.append(origin.host(source))
        elif any(c in source for c in "*?["):
            paths.extend(sorted(context.glob(source)))
        else:
            paths.append(context / source)
    target = PurePosixPath(dest) if dest.startswith("/") else workdir / dest
    mode = int(flags["chmod"], 8) if "chmod" in flags else None
    _copy(paths, rootfs.host(target), dest.endswith("/") or len(paths) > 1, mode)


def run_stage(
    stage: Stage,
    context: Path,
    rootfs: Rootfs,
    *,
    env: Mapping[str, str],
    translate: Iterable[str] = (),
    skip: Callable[[str], bool] = lambda command: False,
    stages: Mapping[str, Rootfs] | None = None,
    timeout: float = 600,
) -> list[str]:
    """Carry out ``stage``'s WORKDIR, ENV, COPY and RUN lines in order, in ``rootfs``.

    RUN lines run with ``/bin/sh -c`` (as Docker's shell form does) in the WORKDIR, with ``env``
    plus the stage's ENV, whose values under ``translate`` (container paths) point into ``rootfs``.
    ``skip`` leaves out RUN commands (e.g. apt-get: this machine's packages stand in for the
    image's). Returns the RUN commands it ran.
    """
    translate = tuple(translate)
    ran: list[str] = []
    done: list[Instruction] = []
    for instruction in stage.instructions:
        done.append(instruction)
        workdir = _workdir_after(done)
        if instruction.keyword == "WORKDIR":
            rootfs.host(workdir).mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            copy_sources(instruction, context, rootfs, workdir, stages or {})
        elif instruction.keyword == "RUN":
            command = instruction.command()
            if skip(command):
                continue
            run_env = Stage(stage.base, stage.name, done).env(env)
            run_env = {k: rootfs.translate(v, translate) for k, v in run_env.items()}
            cwd = rootfs.host(workdir)
            cwd.mkdir(parents=True, exist_ok=True)
            result = subprocess.run(
                ["/bin/sh", "-c", command],
                cwd=cwd,
                env=run_env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            if result.returncode != 0:
                raise BuildError(
                    f"RUN {command}\nexited with {result.returncode}\n{result.stdout[-4000:]}\n"
                    f"{result.stderr[-4000:]}"
                )
            ran.append(command)
    return ran
