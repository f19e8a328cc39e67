"""`semanticac-edge doctor`: everything a field install needs, checked one thing at a time.

Each check gives one `Check`: a status (ok | warn | FAIL), what was found and, for every
problem, the command or action that fixes it. The CLI prints them as

    ok    onnxruntime: 1.20.1, providers ['CPUExecutionProvider'] (listen uses CPUExecutionProvider)
    warn  tensorrt: not installed (comes with JetPack); listen runs on ONNX Runtime
          fix: on a Jetson: install JetPack 6, make the venv with --system-site-packages, ...

and exits non-zero when any check FAILs. FAIL means `listen` cannot work as installed;
warn means it works, less well or with less (no TensorRT, no microphone, no cache).

Checks are isolated: each runs on its own, an unexpected exception becomes a FAIL with its
message, and nothing here stops the checks after it. Heavy or optional packages (numpy
included: a broken numpy must show up as a FAIL line, not a traceback) are imported inside
the checks. Later checks read what earlier ones found (the bundle, the GPU) from a
`_Context`; a check whose input is missing says "not checked" and points at the line above.

Label sets: the shipped ones, those precomputed in the bundle's labels/, and --labels. A set
is ok when its embeddings are ready (bundle or user cache, same model_id and labels_sha256)
or can be computed on the device (text.onnx and tokenizer present); otherwise it FAILs with
the `semanticac-edge embed-labels` fix; a damaged bundle file FAILs naming that command, a
damaged cache file is a warning (listen computes it again). The lookup is edge.labels.embeddings'
`look_up`, the one listen uses. With --labels given, the other shipped sets are
only warnings: the user has said which set the device listens for.
"""

from __future__ import annotations

import importlib
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for annotations only: the checks import these themselves, one at a time
    from edge.backends.tensorrt.cache import DeviceInfo
    from edge.bundle import Bundle
    from edge.labels.labelset import LabelSet

log = logging.getLogger(__name__)

OK, WARN, FAIL = "ok", "warn", "FAIL"
STATUSES = (OK, WARN, FAIL)
MIN_PYTHON = (3, 10)  # JetPack 6 ships Python 3.10
ORT_INSTALL = 'pip install "onnxruntime>=1.17" (a dependency of semanticac-edge: reinstall it)'
TRT_INSTALL = 'pip install "semanticac-edge[trt]"'
EXPORT_FIX = "point --bundle (or $SEMANTICAC_BUNDLE) at a folder written by `semanticac-train export`"
REEXPORT_FIX = "copy the bundle again (a file was damaged or replaced), or re-export it with `semanticac-train export`"


@dataclass(frozen=True)
class Check:
    """One finding: `status` is ok, warn or FAIL; `fix` says what to do (None when ok)."""

    name: str
    status: str
    finding: str
    fix: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Check {self.name!r}: status {self.status!r} is not one of {list(STATUSES)}")

    def lines(self) -> list[str]:
        """The check as printed: `<status>  <name>: <finding>`, then `fix: ...` for a problem."""
        out = [f"{self.status:<4}  {self.name}: {self.finding}"]
        if self.fix and self.status != OK:
            out.append(f"      fix: {self.fix}")
        return out


@dataclass
class _Context:
    """What the checks learn and pass on: the bundle, the GPU and TensorRT."""

    bundle_option: str | None
    labels: str | None
    bundle: Bundle | None = None  # once model.json has been read
    bundle_problem: str | None = None  # why there is no bundle, or why it failed verification
    verified: bool = False
    device: DeviceInfo | None = None  # when TensorRT and a GPU are both here
    notes: dict[str, object] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Python and the core packages


def check_python(ctx: _Context) -> Check:
    found = f"{platform.python_version()} ({sys.executable})"
    if sys.version_info[:2] >= MIN_PYTHON:
        return Check("python", OK, found)
    need = ".".join(map(str, MIN_PYTHON))
    return Check(
        "python",
        FAIL,
        f"{found}: semanticac-edge needs Python >= {need}",
        f"make the venv with Python {need} or newer (JetPack 6 ships 3.10): "
        f"python3 -m venv --system-site-packages VENV && VENV/bin/pip install semanticac-edge",
    )


def _package_check(
    module: str, fix: str, describe: Callable[[ModuleType], str] | None = None
) -> Callable[[_Context], Check]:
    def check(ctx: _Context) -> Check:
        try:
            mod = importlib.import_module(module)
        except (ImportError, OSError) as err:  # OSError: the package imports, its C library is missing
            return Check(module, FAIL, f"cannot import {module}: {err}", fix)
        version = getattr(mod, "__version__", "version unknown")
        return Check(module, OK, describe(mod) if describe else str(version))

    check.__name__ = f"check_{module}"
    return check


check_numpy = _package_check("numpy", "pip install numpy (a dependency of semanticac-edge)")
check_soundfile = _package_check(
    "soundfile",
    "pip install soundfile; if its libsndfile is missing: apt-get install libsndfile1",
    lambda sf: f"{sf.__version__}, libsndfile {getattr(sf, '__libsndfile_version__', '?')}",
)
check_soxr = _package_check("soxr", "pip install soxr (the resampler; a dependency of semanticac-edge)")


# ---------------------------------------------------------------------------------------------
# Audio capture


def check_portaudio(ctx: _Context) -> Check:
    try:
        import sounddevice as sd
    except OSError as err:  # sounddevice is there, PortAudio's shared library is not
        ctx.notes["portaudio"] = False
        return Check(
            "portaudio",
            FAIL,
            f"the PortAudio library is missing ({err}): no microphone capture",
            "apt-get install libportaudio2",
        )
    except ImportError as err:
        ctx.notes["portaudio"] = False
        return Check(
            "portaudio",
            FAIL,
            f"sounddevice is not installed ({err}): no microphone capture",
            "pip install sounddevice (a dependency of semanticac-edge); then apt-get install libportaudio2",
        )
    ctx.notes["portaudio"] = True
    return Check("portaudio", OK, f"{sd.get_portaudio_version()[1]}, sounddevice {sd.__version__}")


def check_input_devices(ctx: _Context) -> Check:
    if not ctx.notes.get("portaudio"):
        return Check(
            "input devices",
            WARN,
            "not checked: PortAudio is not usable (see portaudio above)",
            "fix portaudio first, then run `semanticac-edge devices`",
        )
    from edge.capture.sources import list_input_devices

    try:
        devices = list_input_devices(rescan=True)
    except Exception as err:  # sounddevice.PortAudioError: PortAudio cannot enumerate its host APIs
        return Check(
            "input devices",
            WARN,
            f"PortAudio cannot list devices: {err}",
            "check the sound system: `arecord -l` (ALSA) or `pactl list short sources` (PulseAudio)",
        )
    if not devices:
        return Check(
            "input devices",
            WARN,
            "none: PortAudio sees no capture device, so `listen` without --input "
            "has nothing to record (--input FILE or - still work)",
            "plug in a microphone (USB or I2S) and check it with `arecord -l`; if PulseAudio runs, "
            "`pactl list short sources`; then `semanticac-edge devices`",
        )
    listing = "; ".join(
        f"{'*' if d.is_default else ''}{d.index} {d.name!r} ({d.channels} ch, {d.default_rate:g} Hz)" for d in devices
    )
    if not any(d.is_default for d in devices):
        return Check(
            "input devices",
            WARN,
            f"{len(devices)}, none is the default: {listing}",
            "pass `listen --device INDEX|NAME`, or set a default input in ALSA/PulseAudio",
        )
    return Check("input devices", OK, f"{len(devices)} (* default): {listing}")


# ---------------------------------------------------------------------------------------------
# Runtimes and the GPU


def check_onnxruntime(ctx: _Context) -> Check:
    from edge.backends.onnxruntime import choose_providers, import_onnxruntime

    try:
        ort = import_onnxruntime()
    except ImportError as err:
        return Check("onnxruntime", FAIL, f"{err}", ORT_INSTALL)
    available = ort.get_available_providers()
    chosen = choose_providers(available)
    return Check("onnxruntime", OK, f"{ort.__version__}, providers {available} (listen uses {chosen[0]})")


def check_tensorrt(ctx: _Context) -> Check:
    import importlib.util

    fix = (
        f"on a Jetson: install JetPack 6 (TensorRT 10), make the venv with --system-site-packages, then "
        f"{TRT_INSTALL}; on a machine without an NVIDIA GPU there is nothing to do"
    )
    if importlib.util.find_spec("tensorrt") is None:
        return Check("tensorrt", WARN, "not installed (comes with JetPack); listen runs on ONNX Runtime", fix)
    from edge.backends.tensorrt.libs import import_pycuda, import_tensorrt

    try:
        trt = import_tensorrt()
    except ImportError as err:  # too old, or its libraries do not load
        return Check("tensorrt", WARN, f"{err}; listen runs on ONNX Runtime", fix)
    try:
        import_pycuda()
    except ImportError:
        return Check(
            "tensorrt", WARN, f"{trt.__version__}, but pycuda is not installed: engines cannot run", TRT_INSTALL
        )
    return Check("tensorrt", OK, f"{trt.__version__}, pycuda present")


def check_gpu(ctx: _Context) -> Check:
    from edge.backends.tensorrt.cache import device_info, gpu_identity
    from edge.errors import BackendError

    try:
        ctx.device = device_info()  # TensorRT + GPU: what engines are checked against
        name, capability, multiprocessors = (
            ctx.device.gpu_name,
            ctx.device.compute_capability,
            ctx.device.multiprocessors,
        )
    except ImportError:  # no TensorRT (or no pycuda): still name the GPU if there is one
        try:
            name, capability, multiprocessors = gpu_identity()
        except ImportError:
            return Check(
                "gpu",
                WARN,
                "not probed: neither pycuda nor cuda-python is installed",
                f"none needed for CPU inference; on a Jetson: {TRT_INSTALL}",
            )
        except BackendError as err:
            return _no_gpu(ctx, err)
    except BackendError as err:
        return _no_gpu(ctx, err)
    return Check("gpu", OK, f"{name}, compute capability {capability}, {multiprocessors} multiprocessors")


def _no_gpu(ctx: _Context, err: Exception) -> Check:
    ctx.device = None
    found = str(err).split(": TensorRT engines need one")[0]  # the cause, without engine_info's advice
    return Check(
        "gpu",
        WARN,
        f"{found}; listen runs on the CPU",
        "none needed for CPU inference; on a Jetson, check the JetPack install "
        "(`tegrastats`, or `nvidia-smi` on a desktop GPU)",
    )


# ---------------------------------------------------------------------------------------------
# The bundle, its graphs and engines


def check_bundle(ctx: _Context) -> Check:
    from edge.bundle import BUNDLE_ENV, resolve_bundle
    from edge.errors import BundleError, OutdatedBundle, UnreadableBundle

    where = "--bundle" if ctx.bundle_option else f"${BUNDLE_ENV}" if os.environ.get(BUNDLE_ENV) else "the demo bundle"
    try:
        ctx.bundle = bundle = resolve_bundle(ctx.bundle_option)
    except OutdatedBundle as err:  # its fix is in its words: the command that converts it
        ctx.bundle_problem = str(err)
        return Check(
            "bundle",
            FAIL,
            str(err),
            "run the command above (it converts the bundle in place, on a machine with the training stack)",
        )
    except BundleError as err:
        ctx.bundle_problem = str(err)
        return Check("bundle", FAIL, str(err), EXPORT_FIX)
    meta, fe = bundle.meta, bundle.meta.frontend
    described = (
        f"{bundle.path} (from {where}): model_id {meta.model_id}, frontend {fe.sample_rate} Hz, "
        f"{fe.n_mels} mels, hop {fe.hop_length} ({fe.frames} frames), clip {meta.clip_seconds:g} s, "
        f"{meta.embedding_dim}-d, text {'none' if meta.text is None else meta.text.file}"
    )
    try:
        bundle.verify()
    except UnreadableBundle as err:  # its fix is in its words: the folder's permissions
        ctx.bundle_problem = str(err)
        return Check("bundle", FAIL, f"{described}; {err}", f"chmod -R a+rX {bundle.path}")
    except BundleError as err:
        ctx.bundle_problem = str(err)
        return Check("bundle", FAIL, f"{described}; {err}", REEXPORT_FIX)
    ctx.verified = True
    return Check("bundle", OK, f"{described}; hashes verified")


def check_audio_graph(ctx: _Context) -> Check:
    """Open model.onnx in ONNX Runtime and run one silent window: the fallback backend works."""
    if ctx.bundle is None:
        return Check("audio graph", WARN, "not checked: no bundle (see bundle above)", "fix the bundle first")
    import numpy as np

    from edge.backends.onnxruntime import OnnxRuntimeBackend
    from edge.errors import BackendError

    bundle, fe = ctx.bundle, ctx.bundle.meta.frontend
    try:
        with OnnxRuntimeBackend.for_bundle(bundle) as backend:
            silence = np.full((1, 1, fe.frames, fe.n_mels), np.log(fe.log_floor), dtype=np.float32)
            started = time.perf_counter()
            out = backend.embed(silence)
            ms = (time.perf_counter() - started) * 1e3
            providers = backend.providers
    except (BackendError, ImportError) as err:
        return Check("audio graph", FAIL, str(err), REEXPORT_FIX if isinstance(err, BackendError) else ORT_INSTALL)
    norm = float(np.linalg.norm(out[0]))
    if not np.all(np.isfinite(out)) or abs(norm - 1.0) > 1e-3:
        return Check(
            "audio graph",
            FAIL,
            f"{bundle.meta.audio.file} runs but gives a bad embedding (norm {norm:.4g}, "
            f"finite: {bool(np.all(np.isfinite(out)))}); it should be unit length",
            REEXPORT_FIX,
        )
    return Check(
        "audio graph",
        OK,
        f"{bundle.meta.audio.file} runs on ONNX Runtime ({providers[0]}): one window "
        f"in {ms:.0f} ms (first run, untuned), embedding {list(out.shape)} of unit length",
    )


def check_vocabulary(ctx: _Context) -> list[Check]:
    """Load the vocabulary branch as listen does (names, trained labels' embeddings, head,
    familiar): a labels/*.npz or head.npz that no longer fits the bundle fails every start."""
    if ctx.bundle is None or ctx.bundle.meta.vocabulary is None:
        return []
    from edge.errors import BundleError
    from edge.vocabulary import Vocabulary

    try:
        vocabulary = Vocabulary.from_bundle(ctx.bundle)
    except BundleError as err:
        return [Check("vocabulary", FAIL, str(err), REEXPORT_FIX)]
    assert vocabulary is not None
    return [
        Check(
            "vocabulary",
            OK,
            f"{ctx.bundle.meta.vocabulary['graph'].file}: {len(vocabulary.names)} named classes, "
            f"{len(vocabulary.trained)} trained labels"
            + ("" if vocabulary.head is None else ", a head")
            + ("" if vocabulary.familiar is None else ", familiar"),
        )
    ]


def check_engines(ctx: _Context) -> list[Check]:
    if ctx.bundle is None:
        return [Check("engines", WARN, "not checked: no bundle (see bundle above)", "fix the bundle first")]
    from edge.backends.tensorrt.cache import engine_dirs, list_engines, rebuild_command

    bundle, device = ctx.bundle, ctx.device
    if device is None:
        return [
            Check(
                "engines",
                WARN,
                "not checked: TensorRT engines need TensorRT and a CUDA GPU (see tensorrt "
                "and gpu above); listen runs on ONNX Runtime",
                f"nothing to do on a CPU-only machine; on a Jetson fix the lines above, then "
                f"`{rebuild_command(bundle)}`",
            )
        ]
    found = list_engines(bundle, device)
    if not found:
        where = " or ".join(str(d) for d in engine_dirs(bundle))
        return [
            Check(
                "engines",
                WARN,
                f"none for this GPU in {where}: listen runs on ONNX Runtime",
                f"`{rebuild_command(bundle)}`",
            )
        ]
    checks: list[Check] = []
    for status in found:
        what = f"engine {status.plan.name}"
        if status.reason is None:
            assert status.sidecar is not None  # list_engines: a usable plan has a readable sidecar
            checks.append(
                Check(
                    what,
                    OK,
                    f"usable ({status.sidecar.get('precision')}, built for "
                    f"{device.gpu_name}, TensorRT {device.tensorrt_version})",
                )
            )
        else:
            precision = (status.sidecar or {}).get("precision", "fp16")
            checks.append(Check(what, WARN, f"refused: {status.reason}", f"`{rebuild_command(bundle, precision)}`"))
    return checks


# ---------------------------------------------------------------------------------------------
# Label sets


def check_label_sets(ctx: _Context) -> list[Check]:
    from edge.errors import SemanticACError
    from edge.labels.labelset import load_label_set, resolve_label_set, shipped_label_sets

    sets: dict[str, tuple[str, LabelSet | None]] = {}
    checks: list[Check] = []
    for name, path in sorted(shipped_label_sets().items()):
        sets[name] = (str(path), None)
    if ctx.labels:
        try:
            asked = resolve_label_set(ctx.labels)
            sets[asked.name] = (asked.source, asked)
        except SemanticACError as err:
            checks.append(
                Check(
                    f"labels {ctx.labels}",
                    FAIL,
                    str(err),
                    f"fix the YAML; `semanticac-edge labels {ctx.labels}` shows what is embedded",
                )
            )
    bundle = ctx.bundle
    if bundle is None:
        return checks + [Check("label sets", WARN, "not checked: no bundle (see bundle above)", "fix the bundle first")]
    asked_name = next((name for name, (_, ls) in sets.items() if ls is not None), None)
    for name, (source, label_set) in sets.items():
        try:
            label_set = label_set or load_label_set(source, shipped=True)
        except SemanticACError as err:
            checks.append(
                Check(f"labels {name}", FAIL, str(err), "reinstall semanticac-edge (a shipped set is broken)")
            )
            continue
        check = _label_set_check(ctx, label_set)
        if check.status == FAIL and ctx.labels and asked_name is not None and name != asked_name:
            check = Check(check.name, WARN, f"{check.finding} (not the --labels set)", check.fix)
        checks.append(check)
        if check.status == OK and name == asked_name:
            checks += _label_warnings(bundle, label_set)
    # Sets precomputed into the bundle: checked against their YAML where the bundle holds it
    # (export's labels/trained.yaml), else without (a custom set embedded on the desktop); not the
    # vocabulary's own classes (its check says what to do of that file)
    vocabulary_file = (bundle.meta.vocabulary or {}).get("labels")
    for path in sorted(bundle.labels_dir.glob("*.npz")) if bundle.labels_dir.is_dir() else []:
        if path.stem in sets or path.stem == vocabulary_file:
            continue
        if not path.with_suffix(".yaml").is_file():
            checks.append(_orphan_embeddings_check(ctx, path))
            continue
        try:
            checks.append(_label_set_check(ctx, load_label_set(path.with_suffix(".yaml"))))
        except SemanticACError as err:
            checks.append(Check(f"labels {path.stem}", FAIL, str(err), f"fix {path.with_suffix('.yaml')}"))
    return checks


def _label_warnings(bundle, label_set: LabelSet) -> list[Check]:
    """The warnings a start gives of the --labels set (weakly named labels, names the text tower
    cannot read, a trained label twice over, ...), as `listen` and `check-config` give them; only
    for embeddings that are ready (doctor computes nothing: that may take minutes on a Jetson)."""
    from edge.labels.embeddings import look_up
    from edge.listen import ListenOptions, scorer_for, start_notes

    if not any(candidate.usable for candidate in look_up(bundle, label_set)):
        return []
    scorer, vocabulary = scorer_for(bundle, label_set)
    windowing = ListenOptions(labels=label_set.source).windowing(bundle)
    notes = start_notes(bundle, label_set, scorer, vocabulary, windowing)
    return [
        Check(f"labels {label_set.name}", WARN, message, f"edit {label_set.source} as the finding says")
        for level, message in notes
        if level == "warning"
    ]


def _label_set_check(ctx: _Context, label_set: LabelSet) -> Check:
    """The lookup `listen` does (edge.labels.embeddings.look_up), told as a finding and a fix."""
    from edge.errors import SemanticACError
    from edge.labels.embeddings import check_prompt_lengths, embed_command, look_up, no_text_tower_fix
    from edge.labels.tokenizers import load_tokenizer

    bundle, name = ctx.bundle, f"labels {label_set.name}"
    assert bundle is not None  # check_label_sets checks label sets only with a bundle
    refused: list[str] = []
    damaged_cache = None
    for candidate in look_up(bundle, label_set):
        if candidate.usable:
            return Check(name, OK, f"{len(label_set.labels)} labels, embeddings ready in {candidate.path}")
        if candidate.corrupt and candidate.place == "bundle":
            return Check(
                name,
                FAIL,
                f"the bundle's label embeddings are damaged: {candidate.problem}",
                f"`{embed_command(bundle, label_set, into='bundle')}`",
            )
        if candidate.corrupt:
            damaged_cache = candidate
        if candidate.problem != "not there":
            refused.append(f"{candidate.path.name} in {candidate.path.parent}: {candidate.problem}")
    prompts = len(label_set.flat_prompts()[0])
    seen = f" ({'; '.join(refused)})" if refused else ""
    if bundle.meta.text is None:
        return Check(
            name,
            FAIL,
            f"no usable embeddings{seen or ' in the bundle or the user cache'}, and the bundle "
            "has no text.onnx to compute them on the device",
            no_text_tower_fix(bundle, label_set),
        )
    text_path = bundle.text_path
    assert text_path is not None  # Bundle.text_path is None only without meta.text, checked above
    if not text_path.is_file() or (
        not ctx.verified and ctx.bundle_problem and bundle.meta.text.file in ctx.bundle_problem
    ):
        return Check(
            name,
            FAIL,
            f"no usable embeddings{seen}, and {bundle.meta.text.file} is missing or damaged (see bundle above)",
            f"{REEXPORT_FIX}; or {no_text_tower_fix(bundle, label_set)}",
        )
    try:
        tokenizer = load_tokenizer(bundle.tokenizer_dir)
    except SemanticACError as err:
        return Check(
            name,
            FAIL,
            f"no usable embeddings{seen}, and the tokenizer for text.onnx is broken: {err}",
            f"{REEXPORT_FIX}; or {no_text_tower_fix(bundle, label_set)}",
        )
    try:
        check_prompt_lengths(label_set, tokenizer)
    except SemanticACError as err:
        return Check(
            name,
            FAIL,
            f"cannot be embedded: {err}",
            f"shorten those prompts in {label_set.source}; `semanticac-edge labels {label_set.source}` "
            "shows each prompt's token count",
        )
    computable = (
        f"{len(label_set.labels)} labels, not precomputed{seen}: computable on the device with "
        f"{bundle.meta.text.file} ({prompts} prompts) at the first listen, then cached"
    )
    if damaged_cache is not None:
        return Check(
            name,
            WARN,
            f"{computable}; the damaged cache file is computed again and rewritten then",
            f"nothing needed; or now: `{embed_command(bundle, label_set, into='cache')}`",
        )
    return Check(name, OK, computable)


def _orphan_embeddings_check(ctx: _Context, path: Path) -> Check:
    from edge.errors import LabelEmbeddingsError
    from edge.labels.embeddings import LabelEmbeddings

    bundle = ctx.bundle
    assert bundle is not None  # check_label_sets looks for orphans only in a bundle
    name = f"labels {path.stem}"
    rebuild = (
        f"`semanticac-edge embed-labels --bundle {bundle.path} --labels {path.stem}.yaml --into bundle` (with its YAML)"
    )
    try:
        found = LabelEmbeddings.load(path)
    except LabelEmbeddingsError as err:
        return Check(name, WARN, f"the bundle's label embeddings are damaged: {err}", f"delete {path}, or {rebuild}")
    if found.model_id != bundle.meta.model_id:
        return Check(
            name,
            WARN,
            f"{path} was computed by model {found.model_id!r}, the bundle is "
            f"{bundle.meta.model_id!r}: it cannot be used",
            rebuild,
        )
    return Check(
        name,
        OK,
        f"{len(found.labels)} labels precomputed in {path} (its YAML is not here: pass it with "
        "--labels to check it is current)",
    )


# ---------------------------------------------------------------------------------------------
# The user cache


def check_cache(ctx: _Context) -> Check:
    """Label embeddings computed on the device, and engines of a read-only bundle, go here."""
    from edge.fsutil import cache_dir, nearest_existing

    folder = cache_dir(ctx.bundle.meta.model_id) if ctx.bundle is not None else cache_dir("x").parent
    fix = f"set $XDG_CACHE_HOME to a writable folder, or make {folder} writable by this user"
    existing = nearest_existing(folder)
    if not existing.is_dir():
        return Check("cache", WARN, f"{folder} cannot be created: {existing} is not a folder", fix)
    if existing == folder:
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as err:
            return Check(
                "cache",
                WARN,
                f"{folder} is not writable ({err}): label embeddings computed on the device "
                "are computed again at every start",
                fix,
            )
        return Check("cache", OK, f"{folder} is writable")
    if not os.access(existing, os.W_OK | os.X_OK):
        return Check(
            "cache",
            WARN,
            f"{folder} cannot be created ({existing} is not writable): label embeddings "
            "computed on the device are computed again at every start",
            fix,
        )
    return Check("cache", OK, f"{folder} can be created (under {existing}, writable)")


def check_clock(ctx: _Context) -> Check:
    """Event dates, and what the event log removes by age, are read on the system clock."""
    from edge.clock import clock_synchronised

    synchronised = clock_synchronised()
    if synchronised is None:
        return Check("clock", OK, "this system does not say whether its clock is synchronised")
    if synchronised:
        return Check("clock", OK, "the system clock is synchronised")
    return Check(
        "clock",
        WARN,
        "the kernel says the system clock is not synchronised: event dates are as right as the clock, and the "
        "event log removes nothing by age until it is",
        "turn NTP on (`timedatectl set-ntp true`, or install chrony); a box whose clock is right without NTP: "
        "service.trust_clock: true in the service config",
    )


# ---------------------------------------------------------------------------------------------

CHECKS: tuple[Callable[[_Context], Check | list[Check]], ...] = (
    check_python,
    check_numpy,
    check_soundfile,
    check_soxr,
    check_portaudio,
    check_input_devices,
    check_onnxruntime,
    check_tensorrt,
    check_gpu,
    check_bundle,
    check_audio_graph,
    check_vocabulary,
    check_engines,
    check_label_sets,
    check_cache,
    check_clock,
)


def _isolated(check: Callable[[_Context], Check | list[Check]], ctx: _Context) -> list[Check]:
    """Run one check; an unexpected exception is that check's FAIL, never the end of doctor."""
    name = check.__name__.removeprefix("check_").replace("_", " ")
    try:
        result = check(ctx)
    # Catching everything is the point of isolating each check.
    except Exception as err:  # noqa: BLE001
        log.debug("check %s raised", name, exc_info=True)
        return [
            Check(
                name,
                FAIL,
                f"the check itself failed: {type(err).__name__}: {err}",
                "run `semanticac-edge -vv doctor` for the traceback and report it with the output above",
            )
        ]
    return [result] if isinstance(result, Check) else list(result)


def run_checks(bundle_option: str | None = None, labels: str | None = None) -> list[Check]:
    """Every check of a field install, in order. Never raises for a problem it finds."""
    ctx = _Context(bundle_option=bundle_option, labels=labels)
    checks: list[Check] = []
    for check in CHECKS:
        found = _isolated(check, ctx)
        for c in found:
            log.info("%s %s: %s", c.status, c.name, c.finding)
        checks += found
    return checks


def failed(checks: Iterable[Check]) -> bool:
    return any(c.status == FAIL for c in checks)


def summary(checks: list[Check]) -> str:
    counts = {s: sum(c.status == s for c in checks) for s in STATUSES}
    verdict = (
        "listen cannot work as installed: fix the FAIL lines"
        if counts[FAIL]
        else "ready" + (" (the warnings above limit it)" if counts[WARN] else "")
    )
    return f"{counts[OK]} ok, {counts[WARN]} warn, {counts[FAIL]} FAIL: {verdict}"
