"""Validated run configurations: TOML files, ``--set section.key=value`` overrides, TOML output.

A configuration has six sections, each a pydantic model whose fields carry a one-line reason:
``[data]``, ``[model]``, ``[sde]``, ``[objective]``, ``[train]``, ``[sample]``. Unknown keys and
values of the wrong type are refused; every user error surfaces as one ``ConfigError`` whose message
is one sentence naming the key. Files and overrides become a ``Config`` here and nowhere else;
``run.build`` turns a ``Config`` into the objects it describes.

The kinds a config may name (``sde.kind``, ``objective.kind``) and what they mean come from the
table in ``run.kinds``. Every number the SDE, the objective and the sampler compute with must be
finite in float32 (``FLOAT32_MAX``), where the model computes: a value beyond it would train and
write rows of NaN.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..datasets import BUNDLED, BUNDLED_CLASSES, IMAGE_FILES, IMAGE_LEVELS, TOY
from .kinds import (
    LADDER_OBJECTIVES,
    OBJECTIVE_KINDS,
    SDE_KINDS,
    SDE_OBJECTIVE,
    SINGLE_LEVEL,
    has_levels,
    is_ladder,
    spell,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "SDEConfig",
    "SampleConfig",
    "TrainConfig",
    "apply_overrides",
    "load_config",
    "parse_config",
    "to_toml",
    "with_absolute_paths",
]

SDEKindName = Literal[tuple(SDE_KINDS)]  # the names of kinds.SDE_KINDS, as pydantic checks them
ObjectiveKindName = Literal[OBJECTIVE_KINDS]

FLOAT32_MAX = 3.4028234663852886e38  # the largest finite float32
# the schedule's rates enter exp(-integral of beta) and beta * x; beyond this the products overflow
MAX_CONFIG_BYTES = 2**20  # a config is a page of settings: a larger file is not one
MAX_RATE = 1e6  # (scores near t = 0 reach ~1/(beta_min t_min); their product with it stays far from 3.4e38)


class ConfigError(ValueError):
    """A configuration the user wrote is invalid; the message is one sentence saying what and where."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @field_validator("*")
    @classmethod
    def _finite_in_float32(cls, value: Any) -> Any:
        if isinstance(value, float) and not abs(value) <= FLOAT32_MAX:
            raise ValueError(f"expected a number finite in float32 (at most ±3.4e38), got {value}")
        return value


class DataConfig(_Section):
    name: str | None = Field(
        "two_gaussians",
        description="a toy or bundled data set, or an image format (mnist, cifar10, image_folder) read from path",
    )
    path: str | None = Field(
        None,
        description="a .npy or .csv table, one example per row (overrides name); or the files of an image format",
    )
    n: int = Field(10_000, gt=0, description="how many examples a toy draws (toys only)")
    seed: int = Field(0, description="seed of the toy draw, so every run sees the same data set")
    hflip: bool = Field(
        False, description="images: mirror each training image left-right with probability 1/2"
    )
    dequantize: bool = Field(
        False,
        description="images: add uniform noise within each pixel's bin, so likelihoods are bits/dim bounds",
    )
    label_column: str | None = Field(
        None,
        description="the column of class labels of a CSV (path): not a feature, its values become classes",
    )
    labels: Literal["data", "clusters"] = Field(
        "data",
        description="class labels: the data's own, or model.num_classes k-means clusters of the training data",
    )
    header: bool | None = Field(
        None,
        description="a CSV's first line names the columns (true), is data (false); unset: a header when "
        "it is not all numbers",
    )

    @property
    def images(self) -> bool:
        """Whether the data are images ``[N, C, H, W]`` (an entry of ``datasets.IMAGE_LEVELS``)."""
        return self.name in IMAGE_LEVELS and (self.path is None or self.name in IMAGE_FILES)

    @model_validator(mode="after")
    def _known_name(self) -> DataConfig:
        if self.name in IMAGE_FILES and self.path is None:
            raise ValueError(f"data.name = {self.name} is read from files: set data.path to them")
        if self.path is None:
            known = sorted(TOY) + sorted(BUNDLED)
            if self.name not in known:
                raise ValueError(
                    f"unknown data set {self.name!r}; choose one of {', '.join(known)}, "
                    f"or {', '.join(sorted(IMAGE_FILES))} with path, or set path to a table"
                )
        if self.header is not None and not (self.path or "").lower().endswith(".csv"):
            raise ValueError("header applies to a CSV file: set data.path to a .csv file")
        if self.label_column is not None and self.header is False:
            raise ValueError("label_column names a column of the header: drop header = false")
        if self.label_column is not None and not (self.path or "").lower().endswith(".csv"):
            raise ValueError("label_column names a column of a CSV file: set data.path to a .csv file")
        if (self.hflip or self.dequantize) and not self.images:
            raise ValueError(
                f"hflip and dequantize apply to images ({', '.join(sorted(IMAGE_LEVELS))}), not {self.name!r}"
            )
        return self


class ModelConfig(_Section):
    kind: Literal["mlp", "unet"] = Field("mlp", description="the network: an MLP, or a U-Net for images")
    hidden: int = Field(128, gt=0, description="width of each hidden layer of the MLP")
    depth: int = Field(3, gt=0, description="number of hidden layers of the MLP")
    channels: int = Field(64, gt=0, description="U-Net: channels of the first level")
    channel_mults: list[int] = Field(
        [1, 2],
        min_length=1,
        description="U-Net: channels of each level as multiples; each level halves the size",
    )
    n_res_blocks: int = Field(
        2, gt=0, description="U-Net: residual blocks per level (the decoder has one more)"
    )
    attention_resolutions: list[int] = Field(
        [],
        description="U-Net: image sizes (e.g. 16 for 32x32 images) at which self-attention follows the blocks",
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="U-Net: dropout inside the residual blocks")
    embed_dim: int = Field(
        64, ge=2, description="size of the noise-level embedding (even: sin and cos pairs)"
    )
    embedding: Literal["fourier", "sinusoidal"] = Field("fourier", description="noise-level embedding")
    param: Literal["eps", "score", "denoiser"] = Field(
        "eps", description="what the network predicts under an SDE (ScoreModel); ncsn uses F/sigma"
    )
    num_classes: int = Field(
        0, ge=0, description="classes of the data's labels the model is conditioned on; 0 = unconditional"
    )

    @field_validator("embed_dim")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError(f"embed_dim must be even (one sin and one cos per frequency), got {value}")
        return value

    @field_validator("channel_mults", "attention_resolutions")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(v < 1 for v in value):
            raise ValueError(f"expected positive integers, got {value}")
        return value


class SDEConfig(_Section):
    kind: SDEKindName = Field("vp", description="forward SDE, or ncsn for a discrete ladder of noise levels")
    sigma_min: float = Field(
        0.01, gt=0, le=FLOAT32_MAX, description="smallest noise level (ve, ncsn): below the data's spacing"
    )
    sigma_max: float | str = Field(
        50.0, description='largest noise level (ve, ncsn), or "auto" = largest pairwise data distance'
    )
    beta_min: float = Field(0.1, gt=0, le=MAX_RATE, description="noise rate at t=0 (vp, subvp)")
    beta_max: float = Field(
        20.0, gt=0, le=MAX_RATE, description="noise rate at t=1 (vp, subvp): m(1) close to 0"
    )
    n_levels: int = Field(10, ge=2, description="number of geometric noise levels (ncsn)")
    t_min: float = Field(
        1e-5, gt=0, lt=1, description="smallest time in training and likelihoods (t=0 is singular)"
    )

    @field_validator("sigma_max")
    @classmethod
    def _number_or_auto(cls, value: float | str) -> float | str:
        if isinstance(value, str) and value != "auto":
            raise ValueError(f'sigma_max must be a positive number or "auto", got {value!r}')
        if not isinstance(value, str) and not (0 < value <= FLOAT32_MAX):
            raise ValueError(
                f'sigma_max must be a positive number finite in float32 (at most 3.4e38) or "auto", got {value}'
            )
        return value

    @model_validator(mode="after")
    def _ordered(self) -> SDEConfig:
        if not isinstance(self.sigma_max, str) and self.sigma_min >= self.sigma_max:
            raise ValueError(
                f"sigma_min ({self.sigma_min}) must be smaller than sigma_max ({self.sigma_max})"
            )
        if self.beta_min >= self.beta_max:
            raise ValueError(f"beta_min ({self.beta_min}) must be smaller than beta_max ({self.beta_max})")
        return self


class ObjectiveConfig(_Section):
    kind: ObjectiveKindName = Field(
        "sde_dsm", description="training loss: sde_dsm for ve/vp/subvp, the others for sde.kind = ncsn"
    )
    weighting: Literal["std2", "likelihood"] = Field(
        "std2", description="sde_dsm weight lambda(t): std^2, or g^2 to bound the likelihood"
    )
    importance_sampling: bool = Field(False, description="sde_dsm with likelihood weighting: t ~ g^2/std^2")
    sigma: float | None = Field(
        None, gt=0, description="the one noise level of dsm/ssm/ism (default: sde.sigma_min)"
    )
    n_projections: int = Field(1, gt=0, description="random projections per example (ssm, ism hutchinson)")
    trace: Literal["exact", "hutchinson"] = Field("exact", description="how ism takes tr(grad s)")

    @model_validator(mode="after")
    def _importance_needs_likelihood(self) -> ObjectiveConfig:
        if self.importance_sampling and (self.kind != "sde_dsm" or self.weighting != "likelihood"):
            raise ValueError("importance_sampling needs kind = sde_dsm and weighting = likelihood")
        return self


class TrainConfig(_Section):
    steps: int = Field(2000, gt=0, description="optimizer steps in total (a resumed run continues to this)")
    batch_size: int = Field(256, gt=0, description="global batch, split evenly over the processes")
    lr: float = Field(2e-3, gt=0, description="AdamW peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay")
    warmup: int = Field(100, ge=0, description="steps of linear learning-rate warm-up from 0")
    grad_clip: float = Field(1.0, ge=0, description="clip the global gradient norm to this (0 = off)")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="decay of the weight average used for sampling")
    label_dropout: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="model.num_classes > 0: chance a label becomes the null one, to learn p(x) too",
    )
    ckpt_every: int = Field(
        500, gt=0, description="steps between checkpoints (one is always written at the end)"
    )
    keep_last: int = Field(3, gt=0, description="checkpoints kept; older ones are deleted")
    log_every: int = Field(50, gt=0, description="steps between lines of metrics.jsonl")
    seed: int = Field(0, description="seed of the weights, the data order and the noise")
    device: str = Field("auto", description='"auto" (CUDA when present), "cpu" or "cuda[:k]"')

    # -- speed: how the network runs; the weights, checkpoints and all other arithmetic stay float32 --
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="the network's arithmetic: bf16 autocast is faster on CPUs with AMX and GPUs since Ampere",
    )
    compile: bool = Field(
        False, description="torch.compile the network: faster steps after a warm-up of seconds to minutes"
    )

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value not in ("auto", "cpu") and not (value == "cuda" or value.startswith("cuda:")):
            raise ValueError(f'device must be "auto", "cpu" or "cuda[:k]", got {value!r}')
        return value


class SampleConfig(_Section):
    sampler: Literal["ode", "dpm", "fast", "pc", "em", "ald"] = Field(
        "ode",
        description="probability-flow ODE, its DPM-Solver++(2M) integrator (20-50 steps), sample_fast "
        "(UniPC; steps = score evaluations), predictor-corrector, Euler-Maruyama or annealed Langevin",
    )
    steps: int = Field(500, gt=0, description="sampler steps (fixed-step ODE methods too); per level for ald")
    ode_method: Literal["dopri5", "rk4", "heun", "euler"] = Field("dopri5", description="ODE solver")
    rtol: float = Field(1e-5, gt=0, description="relative tolerance of the adaptive ODE solver")
    atol: float = Field(1e-5, gt=0, description="absolute tolerance of the adaptive ODE solver")
    snr: float = Field(
        0.16, gt=0, description="signal-to-noise ratio setting the Langevin corrector step (pc)"
    )
    n_corrector: int = Field(1, ge=0, description="Langevin corrector steps per predictor step (pc)")
    t_end: float = Field(1e-3, gt=0, lt=1, description="time at which the SDE and ODE samplers stop")
    step_size: float = Field(2e-5, gt=0, description="annealed Langevin step at the smallest level (ald)")
    denoise: bool = Field(True, description="finish with one Tweedie denoising step")
    batch_size: int = Field(
        1000,
        gt=0,
        description="samples per sampler call: memory and speed only, as every sample is keyed by "
        "(seed, index) and so does not depend on it, up to float rounding",
    )


class Config(_Section):
    data: DataConfig = Field(default_factory=DataConfig, description="the training data")
    model: ModelConfig = Field(default_factory=ModelConfig, description="the network")
    sde: SDEConfig = Field(default_factory=SDEConfig, description="the forward noising process")
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig, description="the loss")
    train: TrainConfig = Field(default_factory=TrainConfig, description="the optimisation")
    sample: SampleConfig = Field(default_factory=SampleConfig, description="the default sampler")

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        kind, objective = self.sde.kind, self.objective.kind
        ladders = spell(name for name in SDE_KINDS if is_ladder(name))
        with_levels = spell(name for name in SDE_KINDS if has_levels(name))
        if not is_ladder(kind) and objective != SDE_OBJECTIVE:
            raise ValueError(
                f"objective.kind = {objective} needs sde.kind = {ladders}; an SDE ({kind}) trains with "
                f"{SDE_OBJECTIVE}"
            )
        if is_ladder(kind) and objective not in LADDER_OBJECTIVES:
            raise ValueError(
                f"sde.kind = {kind} trains with one of {', '.join(LADDER_OBJECTIVES)}, not {objective}"
            )
        if self.sample.sampler == "ald" and not has_levels(kind):
            raise ValueError(
                f"sample.sampler = ald needs noise levels (sde.kind = {with_levels}), not {kind}"
            )
        if self.sde.sigma_max == "auto" and not has_levels(kind):
            raise ValueError(f'sde.sigma_max = "auto" applies to sde.kind = {with_levels}, not {kind}')
        if self.model.kind == "unet" and not self.data.images:
            raise ValueError(
                f"model.kind = unet needs images ({', '.join(sorted(IMAGE_LEVELS))}), not data {self.data.name!r}"
            )
        sigma = self.objective.sigma
        if sigma is not None and objective not in SINGLE_LEVEL:
            raise ValueError(f"objective.sigma applies to {spell(SINGLE_LEVEL, 'and')}, not {objective}")
        self._check_labels()
        return self

    def _check_labels(self) -> None:
        """Class labels (``model.num_classes > 0``) need labelled data (or ``data.labels = clusters``) and
        the SDE objective."""
        k, data = self.model.num_classes, self.data
        bundled = BUNDLED_CLASSES.get(data.name, ()) if data.path is None else ()
        if k and self.objective.kind != SDE_OBJECTIVE:
            objective = self.objective.kind
            raise ValueError(
                f"model.num_classes > 0 trains with objective.kind = {SDE_OBJECTIVE}, not {objective}"
            )
        if data.labels == "clusters":
            if k < 2:
                raise ValueError(
                    f"data.labels = clusters needs model.num_classes >= 2, the number of clusters, got {k}"
                )
            if data.label_column is not None:
                raise ValueError("data.labels = clusters makes its own labels: drop data.label_column")
            return
        if k and data.label_column is None and not bundled:
            raise ValueError(
                f"model.num_classes = {k} needs labelled data: a CSV's data.label_column, or data.name = "
                f"{spell(BUNDLED_CLASSES)}"
            )
        if k and bundled and k != len(bundled):
            raise ValueError(
                f"model.num_classes = {k} but data.name = {data.name} has {len(bundled)} classes"
            )
        if data.label_column is not None and not k:
            raise ValueError(
                "data.label_column needs model.num_classes > 0, the number of classes in that column"
            )


# --------------------------------------------------------------------------------------------------
# errors, overrides, loading


def _error_sentence(error: ValidationError) -> str:
    """The first problem of a pydantic error as one sentence naming the key."""
    first = error.errors()[0]
    loc = [str(part) for part in first["loc"]]
    key = ".".join(loc)
    if first["type"] == "extra_forbidden":
        section = _section_model(loc[:-1])
        known = ", ".join(section.model_fields) if section is not None else ""
        where = f"[{'.'.join(loc[:-1])}]" if len(loc) > 1 else "the top level"
        return f"unknown key {key!r}; {where} accepts: {known}"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"].endswith("_type") or first["type"] in (
        "literal_error",
        "greater_than",
        "less_than",
        "greater_than_equal",
        "less_than_equal",
    ):
        message += f", got {first['input']!r}"
    return f"{key}: {message}" if key else message


def _section_model(loc: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(part)
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return None
        model = field.annotation
    return model


def parse_config(raw: dict[str, Any]) -> Config:
    """A ``Config`` from a plain nested dict (a parsed TOML file), or ``ConfigError``."""
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_error_sentence(error)) from None


def _parse_value(text: str) -> Any:
    """A TOML literal (``3``, ``1e-3``, ``true``, ``"x"``, ``[1, 2]``), else the text itself as a string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``raw`` with ``section.key=value`` assignments applied (values parsed as TOML literals)."""
    raw = json.loads(json.dumps(raw))  # a deep copy of plain data
    for item in overrides:
        key, sep, text = item.partition("=")
        path = key.strip().split(".")
        if not sep or not all(path):
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
        node[path[-1]] = _parse_value(text.strip())
    return raw


def load_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Read a TOML file (or start from the defaults when ``path`` is None), apply overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            if path.stat().st_size > MAX_CONFIG_BYTES:
                raise ConfigError(
                    f"config file {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB: not a config"
                )
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"config file {path} cannot be read ({error})") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"config file {path} is not valid TOML ({error})") from None
    return parse_config(apply_overrides(raw, overrides))


def with_absolute_paths(config: Config) -> Config:
    """``config`` with ``data.path`` made absolute (``~`` expanded, a relative path read from the working
    directory), so that a run names its data wherever it is resumed or read from."""
    path = config.data.path
    if path is None:
        return config
    absolute = os.path.abspath(os.path.expanduser(path))
    if absolute == path:
        return config
    return config.model_copy(update={"data": config.data.model_copy(update={"path": absolute})})


# --------------------------------------------------------------------------------------------------
# TOML output: tables of scalars and lists, one comment line per key


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(config: Config) -> str:
    """The resolved configuration as TOML (``load_config`` reads it back to an equal ``Config``)."""
    lines: list[str] = []
    for name, section_field in Config.model_fields.items():
        section: BaseModel = getattr(config, name)
        lines.append(f"[{name}]  # {section_field.description}")
        for key, field in type(section).model_fields.items():
            value = getattr(section, key)
            if value is None:  # TOML has no null: an absent key means the default (None)
                continue
            lines.append(f"{key} = {_toml_value(value)}  # {field.description}")
        lines.append("")
    return "\n".join(lines)
