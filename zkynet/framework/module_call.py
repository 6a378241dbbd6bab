"""A module call: where in a model a node was made (`node.path`, `node.scope`)."""

from typing import Any


class ModuleCall:
    """One call of a module while a graph is built; nodes it creates point to it."""

    __slots__ = ("module", "name", "parent", "call_id", "depth", "_calls_by_name", "_child_names")

    def __init__(self, module: Any, name: str, parent: "ModuleCall | None", call_id: int):
        self.module = module
        self.name = name
        self.parent = parent
        self.call_id = call_id
        self.depth: int = parent.depth + 1 if parent is not None else 0
        self._calls_by_name: dict[str, int] = {}
        self._child_names: dict[int, str] | None = None  # id(submodule) -> its name, looked up once

    @property
    def path(self) -> str:
        names: list[str] = []
        scope: ModuleCall | None = self
        while scope is not None:  # a loop, not recursion: module nesting may be deep
            names.append(scope.name)
            scope = scope.parent
        return "/".join(reversed(names))

    def enter(self, module: Any) -> "ModuleCall":
        """The scope of `module` called from this call: named as the caller's child (see
        Module.children), else by its functional name, with ``#2``, ``#3`` ... for
        repeated calls (shared weights, time steps, parameterless layers of a list)."""
        if self._child_names is None:
            self._child_names = {}
            for child_name, child in self.module.children.items():
                self._child_names.setdefault(id(child), child_name)  # the first name of a shared one
        name = self._child_names.get(id(module)) or module.functional_name
        count = self._calls_by_name[name] = self._calls_by_name.get(name, 0) + 1
        return ModuleCall(module, name if count == 1 else f"{name}#{count}", self, self.call_id)

    def __repr__(self) -> str:
        return f"<ModuleCall {self.path} (call {self.call_id})>"
