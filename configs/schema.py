"""The farm's configuration schema: every field typed, bounded and documented."""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)


class StageName(StrEnum):
    """The five render stages; each has one actor pool."""

    BASE_VIDEO = "base_video"
    VOICE = "voice"
    FACE_SWAP = "face_swap"
    LIP_SYNC = "lip_sync"
    COMPOSITE = "composite"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _even(value: int) -> int:
    if value % 2:
        raise ValueError(f"must be even for H.264 4:2:0, got {value}")
    return value


EvenPixels = Annotated[int, AfterValidator(_even)]  # a frame side H.264 4:2:0 can encode


class TierConfig(_Strict):
    """One product tier: output format, length limit and its scheduling share."""

    width: EvenPixels = Field(ge=64, le=7680, description="Output width in pixels (even).")
    height: EvenPixels = Field(ge=64, le=4320, description="Output height in pixels (even).")
    max_seconds: float = Field(gt=0, le=600, description="Longest video this tier renders.")
    fps: int = Field(default=25, ge=1, le=120, description="Output frame rate.")
    video_bitrate_kbps: int = Field(default=4000, ge=100, le=200_000)
    max_queued: int = Field(default=1000, ge=1, description="Queued jobs before submit refuses.")
    max_running: int = Field(default=2, ge=1, description="Jobs of this tier running at once.")
    capacity_share: float = Field(
        default=0.5, gt=0, le=1, description="Share of farm job slots this tier is entitled to."
    )
    priority: int = Field(default=0, description="Higher tiers win ties when slots are scarce.")
    wait_objective_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Queue wait the tier promises at the 95th percentile (exported as "
        "cameofarm_tier_wait_objective_seconds; an alert fires past it).",
    )


_MODEL_REF = r"^[a-z0-9][a-z0-9._-]{0,63}(@[A-Za-z0-9][A-Za-z0-9._-]{0,63})?$"  # as the model store


class BackendOptions(_Strict):
    """Where and how a backend runs, and which model-store models it loads by role."""

    backend: str = Field(default="reference", min_length=1, description="Backend registry name.")
    models: dict[str, str] = Field(
        default_factory=dict,
        description="Role → model-store name or name@version (e.g. swapper: inswapper_128).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: cuda:N when the node has real GPUs, else cpu."
    )
    precision: Literal["fp32", "fp16", "bf16"] = Field(
        default="fp32", description="Numeric precision on a GPU (CPU runs stay fp32)."
    )
    batch_size: int = Field(default=8, ge=1, le=1024, description="Frames per model call.")

    @field_validator("models")
    @classmethod
    def _refs(cls, value: dict[str, str]) -> dict[str, str]:
        for role, ref in value.items():
            if not role.isidentifier() or not re.match(_MODEL_REF, ref):
                raise ValueError(
                    f"models: {role}: {ref!r} must be a model-store name or name@version "
                    "(lower-case letters, digits, '.', '_' or '-')"
                )
        return value


class PoolConfig(BackendOptions):
    """A stage's actor pool: how many replicas, their GPU share, backend and its options."""

    replicas: int = Field(
        default=1, ge=1, le=256, description="Actors in the pool (`up` starts this many)."
    )
    min_replicas: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="The autoscaler never goes under this (None: replicas).",
    )
    max_replicas: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="The autoscaler never goes over this (None: replicas, a fixed pool).",
    )
    num_gpus: float = Field(
        default=0.25, ge=0, le=8, description="GPU share each replica holds (fractional allowed)."
    )
    cache_cameos: int = Field(default=8, ge=1, description="Per-cameo assets kept per replica.")

    @model_validator(mode="after")
    def _bounds(self) -> PoolConfig:
        if not self.lowest <= self.replicas <= self.highest:
            raise ValueError(
                f"replicas ({self.replicas}) must lie between min_replicas ({self.lowest}) "
                f"and max_replicas ({self.highest})"
            )
        return self

    @property
    def lowest(self) -> int:
        return self.replicas if self.min_replicas is None else self.min_replicas

    @property
    def highest(self) -> int:
        return self.replicas if self.max_replicas is None else self.max_replicas


class AnalyzerConfig(BackendOptions):
    """A face analyzer enrollment runs (its embedding is stored beside the others)."""

    same_person: float | None = Field(
        default=None,
        gt=0,
        description="Distance at or under which two faces are one person (None: the "
        "analyzer's own; the reference analyzer's is enrollment.max_identity_distance).",
    )


class StorageConfig(_Strict):
    """Where media and cameo assets live: a local folder, or MinIO/S3."""

    kind: Literal["local", "minio"] = "local"
    root: str = Field(default="objects", description="Local folder (relative to data_dir).")
    endpoint: str = Field(default="127.0.0.1:9000", description="MinIO host:port.")
    bucket: str = Field(default="cameofarm", min_length=3, max_length=63)
    secure: bool = Field(default=False, description="Use HTTPS to reach MinIO.")
    region: str | None = None
    access_key_env: str = Field(
        default="CAMEOFARM_S3_ACCESS_KEY", description="Env var holding the access key."
    )
    secret_key_env: str = Field(
        default="CAMEOFARM_S3_SECRET_KEY", description="Env var holding the secret key."
    )
    timeout_seconds: float = Field(
        default=15.0,
        gt=0,
        le=600,
        description="MinIO: connect and read timeout of one request (a frozen server is given "
        "up on after this, then retried).",
    )
    retry_seconds: float = Field(
        default=120.0,
        ge=0,
        le=3600,
        description="MinIO: how long an operation is retried with backoff while the server is "
        "unreachable or answers 5xx, before it fails as StorageUnavailableError.",
    )


class DatabaseConfig(_Strict):
    """The metadata database: SQLite file by default, any SQLAlchemy URL otherwise."""

    url: str = Field(
        default="", description="SQLAlchemy URL; empty means sqlite in data_dir/cameofarm.db."
    )


class ClusterConfig(_Strict):
    """Ray: start an embedded head node, or join an existing cluster."""

    address: str | None = Field(
        default=None, description="Ray address to join (e.g. ray://host:10001); none = embedded."
    )
    namespace: str = Field(default="cameofarm", min_length=1)
    num_cpus: int | None = Field(default=None, ge=1, description="CPUs of the embedded node.")
    logical_gpus: int = Field(
        default=2, ge=0, le=64, description="GPUs the embedded node declares when it has none."
    )
    object_store_gb: float = Field(default=4.0, gt=0.1, le=1024)
    dashboard: bool = Field(
        default=False,
        description="Start Ray's dashboard with the embedded head (on 127.0.0.1): nodes, "
        "actors and their logs, tasks, the object store; `cameofarm up` prints its URL.",
    )
    dashboard_port: int = Field(
        default=8265, ge=0, le=65535, description="The dashboard's port; 0 = any free port."
    )


class SchedulerConfig(_Strict):
    """The scheduler loop and its admission limits."""

    tick_seconds: float = Field(default=0.5, gt=0, le=60)
    max_running_jobs: int = Field(default=3, ge=1, description="Farm-wide concurrent jobs.")
    max_attempts: int = Field(default=3, ge=1, description="Runs of one job before it fails.")
    chunk_frames: int = Field(default=25, ge=1, le=1000, description="Frames per work chunk.")
    object_store_share: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Share of Ray's object store the running jobs' frames may hold: a job "
        "starts only when its chunks in flight fit beside theirs, so the store never spills.",
    )
    chunks_in_flight: int = Field(
        default=4,
        ge=1,
        le=256,
        description="Chunks of one job streaming through the stages at once: more keeps more "
        "replicas busy for a lone job; fewer holds fewer frames in the object store.",
    )
    autoscale_seconds: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="How often the autoscaler looks at the pools (those with min_replicas < "
        "max_replicas) and the window their busy ratio is measured over.",
    )
    scale_up_busy: float = Field(
        default=0.75,
        gt=0,
        le=1,
        description="A pool this busy (share of its replicas' time at work) with calls waiting "
        "at its replicas gets one more replica.",
    )
    scale_down_busy: float = Field(
        default=0.25,
        ge=0,
        lt=1,
        description="A pool at most this busy, with no call waiting, for scale_down_after_seconds "
        "loses one replica.",
    )
    scale_down_after_seconds: float = Field(default=120.0, ge=0, le=86400)
    call_first_seconds: float = Field(
        default=900.0,
        gt=0,
        description="Deadline of a stage call before the stage has been measured (a first "
        "call may load a model); a replica past its deadline is restarted.",
    )
    call_floor_seconds: float = Field(
        default=60.0, gt=0, description="Shortest deadline a measured stage call gets."
    )
    call_slack: float = Field(
        default=5.0,
        ge=1,
        description="A measured stage call's deadline: this times the stage's average call.",
    )
    call_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Other replicas one chunk is tried on when its replica dies or hangs, "
        "before the job is queued again.",
    )
    replica_failures_to_drain: int = Field(
        default=3,
        ge=1,
        description="Failed calls in a row that take a replica out of rotation.",
    )
    replica_drain_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How long a replica stays out of rotation before it is tried again.",
    )

    @model_validator(mode="after")
    def _scale_thresholds(self) -> SchedulerConfig:
        if self.scale_down_busy >= self.scale_up_busy:
            raise ValueError(
                f"scale_down_busy ({self.scale_down_busy}) must be under scale_up_busy "
                f"({self.scale_up_busy}), or a pool would grow and shrink in turn"
            )
        return self


class EnrollmentConfig(_Strict):
    """What a calibration recording must meet to make a cameo."""

    min_short_side: int = Field(default=720, ge=64, description="Short side of the video (px).")
    min_speech_seconds: float = Field(default=30.0, ge=0, description="Detected speech needed.")
    min_snr_db: float = Field(default=20.0, description="Speech-to-pause energy ratio (dB).")
    max_clipped_fraction: float = Field(
        default=0.0001, ge=0, le=1, description="Share of samples at >= 98 % of full scale."
    )
    min_face_fraction: float = Field(
        default=0.9, gt=0, le=1, description="Sampled frames with exactly one face found."
    )
    min_face_height: float = Field(
        default=0.15, gt=0, le=1, description="Face box height over frame height (median)."
    )
    max_rest_yaw_deg: float = Field(default=20.0, gt=0, le=90, description="Head turn at rest.")
    min_face_luma: float = Field(default=60.0, ge=0, le=255, description="Mean face brightness.")
    max_face_luma: float = Field(default=235.0, ge=0, le=255)
    min_side_light_ratio: float = Field(
        default=0.6, gt=0, le=1, description="Darker / brighter face half (side shadow)."
    )
    min_fps: float = Field(default=15.0, gt=0)
    max_fps: float = Field(default=120.0, gt=0)
    max_av_mismatch_seconds: float = Field(default=1.0, ge=0, description="|audio - video| length.")
    min_face_motion: float = Field(
        default=0.004,
        ge=0,
        description="How much the face's landmark shape must vary over the recording (share of "
        "face height): a still photo made into a clip is about 0.001, a person speaking 0.01+.",
    )
    sampled_frames: int = Field(
        default=60, ge=5, le=1000, description="Frames the face checks read."
    )
    session_minutes: float = Field(default=15, gt=0, description="Liveness session lifetime.")
    lead_seconds: float = Field(default=2.0, ge=0.5, description="Rest before the challenges.")
    challenge_seconds: float = Field(default=4.0, ge=1.0, description="Window per challenge.")
    min_turn_deg: float = Field(default=12.0, gt=0, description="Head turn a turn must reach.")
    min_smile_gain: float = Field(default=0.08, gt=0, description="Mouth widening for a smile.")
    min_phrase_speech: float = Field(
        default=0.4, gt=0, le=1, description="Share of the phrase window with speech."
    )
    recognize_phrase: bool = Field(
        default=True,
        description="Recognise the liveness phrase's words (pocketsphinx, English) and fail a "
        "session whose words are wrong; off: only that speech happens in its window.",
    )
    max_phrase_word_errors: int = Field(
        default=1,
        ge=0,
        le=7,
        description="Words of the 7-word phrase the recogniser may miss or mishear; another "
        "session's phrase differs in about 6.",
    )
    max_identity_distance: float = Field(
        default=0.62, gt=0, description="dlib distance above which two faces are different people."
    )
    analyzers: list[AnalyzerConfig] = Field(
        default_factory=lambda: [AnalyzerConfig()],
        min_length=1,
        description="Face analyzers run at enrollment. The first finds the faces, landmarks and "
        "5 points the checks use; each stores its own identity embedding of those faces.",
    )
    voice_profiler: BackendOptions = Field(
        default_factory=BackendOptions, description="Turns the enrolled speech into a profile."
    )
    speaker_encoder: AnalyzerConfig = Field(
        default_factory=AnalyzerConfig,
        description="Embeds the speaker for the same-speaker-throughout check (same_person: "
        "its cosine distance; the reference encoder's is max_speaker_distance).",
    )
    mouth_model: BackendOptions = Field(
        default_factory=BackendOptions, description="Builds the cameo's mouth atlas."
    )
    max_speaker_distance: float = Field(
        default=0.32,
        gt=0,
        le=2,
        description="The reference (GE2E) encoder's cosine distance between 5 s of speech "
        "at two moments above which they are different speakers.",
    )
    verified_days: float = Field(default=180, gt=0, description="How long verification lasts.")


class ConsentConfig(_Strict):
    """How far a likeness may travel, and how fast it is gone when deleted."""

    max_cameos_per_video: int = Field(
        default=2,
        ge=1,
        le=2,
        description="Cameos one video may cast: 1, or 2 for a dialogue in which each is cast "
        "onto an actor of a two-actor template scene.",
    )
    purge_days: float = Field(
        default=30, gt=0, le=365, description="Deadline for purging a deleted cameo's objects."
    )
    min_recognised_share: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description="Share of an output's measured frames in which the face must be the cameo's "
        "(within the analyzer's same-person distance of it, and closer to it than to a "
        "template's actor) for the farm to publish it: a face that is not the cameo's is not "
        "what its owner consented to. 0 turns the check off.",
    )


class PromptScenesConfig(_Strict):
    """How prompt scenes are generated (by the base-video pool's text-to-video model, e.g.
    backend: diffusers, models: {pipeline: NAME}). The clip is made at the model's own size
    and rate, fitted to the tier's frame and looped back and forth to the speech."""

    width: EvenPixels = Field(default=832, ge=16, le=4096, description="Generated width (px).")
    height: EvenPixels = Field(default=480, ge=16, le=4096, description="Generated height (px).")
    fps: int = Field(default=16, ge=1, le=60, description="The model's frame rate.")
    seconds: float = Field(
        default=3.0, gt=0, le=20, description="Length generated (looped to the speech)."
    )
    steps: int = Field(default=30, ge=1, le=200, description="Denoising steps.")
    guidance: float = Field(default=5.0, ge=0, le=30, description="Classifier-free guidance.")
    negative_prompt: str = Field(
        default="blurry, distorted face, deformed hands, several people, crowd, text, "
        "subtitles, watermark, low quality",
        max_length=2000,
        description="What the generator steers away from.",
    )
    max_prompt_chars: int = Field(default=500, ge=10, le=4000, description="Longest prompt.")


class ContentRule(_Strict):
    """A named kind of content, recognised by whole-word phrases or regular expressions."""

    description: str = Field(min_length=1)
    phrases: list[str] = Field(default_factory=list, description="Whole words/phrases, any case.")
    patterns: list[str] = Field(default_factory=list, description="Python regexes, any case.")

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        import re

        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} does not compile: {exc}") from None
        return value


class ContentConfig(_Strict):
    """The content policy for scripts: rules, which the farm always refuses, which owners may."""

    rules: dict[str, ContentRule] = Field(default_factory=dict)
    blocked: list[str] = Field(default_factory=list, description="Rules refused for everyone.")
    restrictable: list[str] = Field(
        default_factory=list, description="Rules an owner may refuse for their cameo."
    )

    @model_validator(mode="after")
    def _known(self) -> ContentConfig:
        for field in ("blocked", "restrictable"):
            unknown = sorted(set(getattr(self, field)) - set(self.rules))
            if unknown:
                raise ValueError(f"{field}: unknown rules {unknown}; known: {sorted(self.rules)}")
        return self


class ApiConfig(_Strict):
    """The HTTP API (Ray Serve + FastAPI): where it listens and what each key may do."""

    host: str = Field(default="127.0.0.1", description="Interface to bind; 0.0.0.0 for all.")
    port: int = Field(default=8000, ge=1, le=65535)
    requests_per_minute: float = Field(default=120, gt=0, description="Per-key sustained rate.")
    burst: int = Field(default=30, ge=1, description="Requests a key may make at once.")
    jobs_per_day: int = Field(default=500, ge=1, description="Jobs one user may submit per 24 h.")
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, description="JSON request body limit.")
    max_upload_bytes: int = Field(
        default=512 * 1024 * 1024, ge=1024, description="Recording/background upload limit."
    )
    download_url_seconds: int = Field(default=3600, ge=10, description="Presigned URL lifetime.")
    auth_failures_per_minute: float = Field(
        default=20,
        gt=0,
        description="Failed authentications one client address may make per minute, sustained "
        "(unknown, revoked or expired keys); past it the address gets 429 without a key check.",
    )
    auth_failure_burst: int = Field(
        default=10, ge=1, description="Failed authentications one client address may make at once."
    )
    max_requests_per_client: int = Field(
        default=16,
        ge=1,
        description="Requests one client address may have in progress at once; past it, 429.",
    )
    body_idle_seconds: float = Field(
        default=15.0, gt=0, description="A request body that sends nothing for this long: 408."
    )
    body_grace_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Time any request body may take; past it, it must keep the minimum pace.",
    )
    min_body_bytes_per_second: int = Field(
        default=64 * 1024,
        ge=1,
        description="Slowest average pace a request body may arrive at after the grace "
        "period (408 below it): slow-sending clients cannot hold the API's request slots.",
    )
    max_ongoing_requests: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Requests the API replica works on at once (Ray Serve's limit); the rest "
        "wait in the proxy.",
    )


class LogConfig(_Strict):
    """The farm processes' logs (scheduler, stage replicas, API replica)."""

    format: Literal["text", "json"] = Field(
        default="text",
        description="text: one readable line per record; json: one JSON object per line, "
        "with job, tier, stage and replica fields where the record is about them.",
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class MonitoringConfig(_Strict):
    """Prometheus endpoints of the farm's processes, what the scheduler watches for them, and
    the processes' logs."""

    host: str = Field(
        default="127.0.0.1",
        description="Interface the metrics endpoints bind; 0.0.0.0 when a Prometheus on "
        "another host scrapes the farm.",
    )
    scheduler_port: int = Field(
        default=9640,
        ge=0,
        le=65535,
        description="The scheduler's /metrics (jobs, queues, stages, replicas, GPUs, consent, "
        "purges, webhooks); 0 = off.",
    )
    api_port: int = Field(
        default=9641,
        ge=0,
        le=65535,
        description="The API replica's /metrics (requests by route and status, latency, "
        "rate-limit refusals); 0 = off.",
    )
    replica_poll_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="How often the scheduler asks every replica for its health (restarts, "
        "model loads, GPU readings).",
    )
    audit_verify_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How often the scheduler verifies the audit chain "
        "(cameofarm_audit_chain_valid).",
    )
    log: LogConfig = LogConfig()


class WebhookConfig(_Strict):
    """Job-completion webhooks: HMAC-signed POSTs retried with exponential backoff."""

    max_attempts: int = Field(default=6, ge=1, le=50)
    backoff_seconds: float = Field(default=2.0, gt=0, description="First retry delay; doubles.")
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    allow_destinations: list[str] = Field(
        default_factory=list,
        description="Internal addresses webhooks may reach after all: an address or network, "
        "optionally with a port ('10.0.0.0/8', '127.0.0.1:9000', '[::1]:9000'). Empty (the "
        "default): only public addresses; loopback, private and link-local ones are refused.",
    )

    @field_validator("allow_destinations")
    @classmethod
    def _parse_each(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            parse_destination(entry)
        return entries


def parse_destination(
    text: str,
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int | None]:
    """Parse an allow-list entry into (network, port or None); raise ValueError saying why."""
    host, port = text.strip(), None
    try:
        if host.startswith("["):  # [v6]:port
            inner, _, rest = host[1:].partition("]")
            host, port = inner, int(rest[1:]) if rest.startswith(":") else None
        elif host.count(":") == 1:  # v4:port
            host, _, digits = host.partition(":")
            port = int(digits)
        network = ipaddress.ip_network(host, strict=False)
    except ValueError:
        raise ValueError(
            f"allow-list entry {text!r} is not an address or network "
            "(e.g. 10.0.0.5, 10.0.0.0/8, 127.0.0.1:8080, [::1]:8080)"
        ) from None
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"allow-list entry {text!r}: the port must be 1-65535")
    return network, port


class FarmConfig(_Strict):
    """Everything the farm reads at start."""

    data_dir: str = Field(default=".farm", description="Local state: DB, objects, keys, logs.")
    tiers: dict[str, TierConfig]
    pools: dict[StageName, PoolConfig]
    storage: StorageConfig = StorageConfig()
    database: DatabaseConfig = DatabaseConfig()
    cluster: ClusterConfig = ClusterConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    enrollment: EnrollmentConfig = EnrollmentConfig()
    consent: ConsentConfig = ConsentConfig()
    content: ContentConfig = ContentConfig()
    api: ApiConfig = ApiConfig()
    webhooks: WebhookConfig = WebhookConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    prompt_scenes: PromptScenesConfig = PromptScenesConfig()

    @model_validator(mode="after")
    def _complete(self) -> FarmConfig:
        missing = sorted(set(StageName) - set(self.pools))
        if missing:
            raise ValueError(f"pools: missing stage pools {missing}")
        if not self.tiers:
            raise ValueError("tiers: at least one tier is required")
        for name in self.tiers:
            if not name.isidentifier():
                raise ValueError(f"tiers: tier name {name!r} must be a simple identifier")
        gpu_demand = sum(p.replicas * p.num_gpus for p in self.pools.values())
        if self.cluster.address is None and gpu_demand > self.cluster.logical_gpus > 0:
            raise ValueError(
                f"pools ask for {gpu_demand:g} GPUs but cluster.logical_gpus is "
                f"{self.cluster.logical_gpus}; lower replicas/num_gpus or raise logical_gpus"
            )
        return self

    def tier(self, name: str) -> TierConfig:
        """Return the named tier or raise KeyError listing the known tiers."""
        try:
            return self.tiers[name]
        except KeyError:
            raise KeyError(f"unknown tier {name!r}; known tiers: {sorted(self.tiers)}") from None
