"""Equations for the demo's page: a small TeX subset turned into MathML, which browsers render
natively (no script, no font, nothing fetched), so the page stays one offline file.

``tex(r"s_\\theta(x) \\approx \\nabla_x \\log p(x)")`` returns ``<math>...</math>``; ``display=True``
makes it a centred block. The subset is what the page's equations use: letters and digits,
operators, ``^`` and ``_`` (with ``{...}`` groups), ``\\frac``, ``\\sqrt``, the accents ``\\tilde``,
``\\hat`` and ``\\bar``, ``\\text``, ``\\mathbb``, ``\\mathcal``, ``\\mathrm``, ``\\operatorname``,
function names (``\\log``, ``\\exp``, ...), Greek letters and the symbols in ``SYMBOLS``. Anything
else raises ``ValueError``, so a typo cannot reach the page silently.
"""

from __future__ import annotations

import html
import re

__all__ = ["SYMBOLS", "tex"]

GREEK = {
    name: chr(code)
    for name, code in (
        ("alpha", 0x3B1), ("beta", 0x3B2), ("gamma", 0x3B3), ("delta", 0x3B4), ("epsilon", 0x3F5),
        ("varepsilon", 0x3B5), ("zeta", 0x3B6), ("eta", 0x3B7), ("theta", 0x3B8), ("kappa", 0x3BA),
        ("lambda", 0x3BB), ("mu", 0x3BC), ("nu", 0x3BD), ("xi", 0x3BE), ("pi", 0x3C0), ("rho", 0x3C1),
        ("sigma", 0x3C3), ("tau", 0x3C4), ("phi", 0x3D5), ("varphi", 0x3C6), ("chi", 0x3C7),
        ("psi", 0x3C8), ("omega", 0x3C9), ("Gamma", 0x393), ("Delta", 0x394), ("Theta", 0x398),
        ("Lambda", 0x39B), ("Sigma", 0x3A3), ("Phi", 0x3A6), ("Psi", 0x3A8), ("Omega", 0x3A9),
    )
}  # fmt: skip

# symbol -> (element, text): identifiers are "mi", operators "mo"
SYMBOLS = {
    "nabla": ("mi", "∇"), "partial": ("mi", "∂"), "infty": ("mi", "∞"), "top": ("mi", "⊤"),
    "ell": ("mi", "ℓ"), "cdot": ("mo", "⋅"), "times": ("mo", "×"), "pm": ("mo", "±"),
    "le": ("mo", "≤"), "leq": ("mo", "≤"), "ge": ("mo", "≥"), "geq": ("mo", "≥"), "neq": ("mo", "≠"),
    "approx": ("mo", "≈"), "equiv": ("mo", "≡"), "sim": ("mo", "∼"), "propto": ("mo", "∝"),
    "to": ("mo", "→"), "rightarrow": ("mo", "→"), "leftarrow": ("mo", "←"), "mapsto": ("mo", "↦"),
    "in": ("mo", "∈"), "mid": ("mo", "∣"), "ast": ("mo", "∗"), "star": ("mo", "⋆"), "circ": ("mo", "∘"),
    "ldots": ("mo", "…"), "dots": ("mo", "…"), "cdots": ("mo", "⋯"), "langle": ("mo", "⟨"),
    "rangle": ("mo", "⟩"), "|": ("mo", "‖"), "{": ("mo", "{"), "}": ("mo", "}"), "sum": ("mo", "∑"),
    "int": ("mo", "∫"), "prod": ("mo", "∏"), "Rightarrow": ("mo", "⇒"), "lfloor": ("mo", "⌊"),
    "rfloor": ("mo", "⌋"), "min": ("mi", "min"), "max": ("mi", "max"), "iff": ("mo", "⟺"),
}  # fmt: skip
SIZES = {"big": "1.2em", "Big": "1.6em", "bigg": "2.1em", "Bigg": "2.6em", "left": None, "right": None}
DELIMITERS = {
    "(": "(",
    ")": ")",
    "[": "[",
    "]": "]",
    "|": "|",
    "\\|": "‖",
    "\\{": "{",
    "\\}": "}",
    "\\langle": "⟨",
    "\\rangle": "⟩",
    "\\mid": "∣",
    ".": "",
}
SPACES = {",": "0.17em", ";": "0.28em", "quad": "1em", "qquad": "2em", " ": "0.25em"}
FUNCTIONS = {"log", "exp", "det", "tr", "sin", "cos", "softmax", "logsumexp", "argmax", "argmin", "KL", "Var"}
ACCENTS = {"tilde": "~", "hat": "^", "bar": "¯"}
DOUBLE_STRUCK = {"E": "𝔼", "R": "ℝ", "N": "ℕ", "P": "ℙ"}
CALLIGRAPHIC = {"N": "𝒩", "L": "ℒ", "D": "𝒟", "U": "𝒰"}
BIG = {"∑", "∏"}
OPERATORS = set("+-=<>()[],;:/!|*'.")

_TOKEN = re.compile(r"\\[A-Za-z]+|\\.|[A-Za-z]|[0-9]+(?:\.[0-9]+)?|\S")


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


class _Parser:
    def __init__(self, source: str, display: bool):
        found = list(_TOKEN.finditer(source))
        self.tokens = [m.group() for m in found]
        self.starts = [m.start() for m in found]
        self.pos, self.display, self.source = 0, display, source

    def error(self, message: str) -> ValueError:
        return ValueError(f"{message} in {self.source!r}")

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise self.error("unexpected end")
        self.pos += 1
        return token

    def raw_group(self) -> str:
        """The source text of the next ``{...}`` group (for ``\\text`` and the like), unparsed."""
        if self.take() != "{":
            raise self.error("expected {")
        begin, depth = self.starts[self.pos - 1] + 1, 1
        while True:
            token = self.take()
            depth += token == "{"
            depth -= token == "}"
            if depth == 0:
                return self.source[begin : self.starts[self.pos - 1]]

    def sequence(self, closing: str | None = None) -> str:
        nodes = []
        while True:
            token = self.peek()
            if token is None:
                if closing is not None:
                    raise self.error(f"missing {closing}")
                break
            if token == closing:
                self.pos += 1
                break
            if token == "}":
                raise self.error("unbalanced }")
            nodes.append(self.scripted())
        return "".join(nodes)

    def scripted(self) -> str:
        """An atom with its sub- and superscripts."""
        base, big = self.atom()
        sub = sup = None
        while self.peek() in ("_", "^"):
            which = self.take()
            script, _ = self.atom()
            if which == "_":
                sub = script
            else:
                sup = script
        if sub is None and sup is None:
            return base
        under = big and self.display
        if sub is not None and sup is not None:
            tag = "munderover" if under else "msubsup"
            return f"<{tag}>{base}{sub}{sup}</{tag}>"
        if sub is not None:
            tag = "munder" if under else "msub"
            return f"<{tag}>{base}{sub}</{tag}>"
        tag = "mover" if under else "msup"
        return f"<{tag}>{base}{sup}</{tag}>"

    def group(self) -> str:
        token = self.peek()
        if token is not None and len(token) > 1 and token[0].isdigit():  # \frac12: one digit per argument
            self.tokens[self.pos : self.pos + 1] = [token[0], token[1:]]
            self.starts[self.pos : self.pos + 1] = [self.starts[self.pos], self.starts[self.pos] + 1]
        if self.peek() == "{":
            self.take()
            return f"<mrow>{self.sequence('}')}</mrow>"
        node, _ = self.atom()
        return node

    def atom(self) -> tuple[str, bool]:
        """One atom's MathML and whether it is a big operator (sum, product)."""
        token = self.take()
        if token == "{":
            return f"<mrow>{self.sequence('}')}</mrow>", False
        if token.isdigit() or re.fullmatch(r"[0-9]+\.[0-9]+", token):
            return f"<mn>{token}</mn>", False
        if token.isalpha():
            return f"<mi>{token}</mi>", False
        if not token.startswith("\\"):
            if token not in OPERATORS:
                raise self.error(f"unknown character {token!r}")
            text = {"-": "−", "*": "∗", "'": "′"}.get(token, token)
            stretchy = ' stretchy="false"' if text in "()[]|" else ""
            return f"<mo{stretchy}>{_esc(text)}</mo>", False
        name = token[1:]
        if name in SPACES:
            return f'<mspace width="{SPACES[name]}"></mspace>', False
        if name in GREEK:
            return f"<mi>{GREEK[name]}</mi>", False
        if name in FUNCTIONS:
            return f'<mi>{name}</mi><mspace width="0.17em"></mspace>', False
        if name in SYMBOLS:
            element, text = SYMBOLS[name]
            if element == "mo":
                stretchy = ' stretchy="false"' if text in "‖{}⟨⟩" else ""
                large = ' largeop="true"' if text in BIG and self.display else ""
                return f"<mo{stretchy}{large}>{_esc(text)}</mo>", text in BIG
            variant = ' mathvariant="normal"' if len(text) == 1 else ""
            return f"<mi{variant}>{_esc(text)}</mi>", False
        if name in SIZES:
            delimiter = self.take()
            if delimiter not in DELIMITERS:
                raise self.error(f"\\{name} needs a delimiter, got {delimiter!r}")
            text = DELIMITERS[delimiter]
            if not text:
                return "", False
            size = SIZES[name]
            sized = f' minsize="{size}" maxsize="{size}"' if size else ""
            return f'<mo stretchy="true" symmetric="true"{sized}>{_esc(text)}</mo>', False
        if name in ("frac", "tfrac"):
            top = self.group()
            style = ' displaystyle="false"' if name == "tfrac" else ""
            return f"<mfrac{style}>{top}{self.group()}</mfrac>", False
        if name == "sqrt":
            return f"<msqrt>{self.group()}</msqrt>", False
        if name in ACCENTS:
            return f'<mover accent="true">{self.group()}<mo>{_esc(ACCENTS[name])}</mo></mover>', False
        if name == "text":
            return f"<mtext>{_esc(self.raw_group())}</mtext>", False
        if name in ("operatorname", "mathrm"):
            text = self.raw_group()
            variant = ' mathvariant="normal"' if len(text) == 1 else ""
            space = '<mspace width="0.17em"></mspace>' if name == "operatorname" else ""
            return f"<mi{variant}>{_esc(text)}</mi>{space}", False
        if name in ("mathbb", "mathcal"):
            letter = self.raw_group()
            table = DOUBLE_STRUCK if name == "mathbb" else CALLIGRAPHIC
            if letter not in table:
                raise self.error(f"no \\{name} for {letter!r}")
            return f'<mi mathvariant="normal">{table[letter]}</mi>', False
        if name == "mathbf":
            return f'<mi mathvariant="bold">{_esc(self.raw_group())}</mi>', False
        raise self.error(f"unknown command {token!r}")


def tex(source: str, display: bool = False) -> str:
    """The MathML of ``source`` (the TeX subset described above), inline or as a block."""
    body = _Parser(source, display).sequence()
    block = ' display="block"' if display else ""
    return f'<math{block} alttext="{html.escape(source)}"><mrow>{body}</mrow></math>'
