"""A griffe extension for the API pages: leave out the attributes that ``__init__`` sets on ``self``
without a docstring.

For scikit-learn style estimators those are the constructor's parameters again, already described in
the class docstring. Names declared in the class body (dataclass fields, class attributes) and
attributes with a docstring stay.
"""

from __future__ import annotations

import ast

import griffe


def _declared(node: ast.ClassDef) -> set[str]:
    """Names annotated or assigned directly in the class body."""
    names = set()
    for statement in node.body:
        if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            names.add(statement.target.id)
        elif isinstance(statement, ast.Assign):
            names.update(t.id for t in statement.targets if isinstance(t, ast.Name))
    return names


class UndocumentedInstanceAttributes(griffe.Extension):
    def on_class_members(self, *, node, cls: griffe.Class, agent, **kwargs) -> None:
        if not isinstance(node, ast.ClassDef):  # loaded by inspection: nothing to tell them apart by
            return
        declared = _declared(node)
        for name, member in list(cls.members.items()):
            if (
                not member.is_alias
                and "instance-attribute" in member.labels
                and not member.docstring
                and name not in declared
            ):
                del cls.members[name]
