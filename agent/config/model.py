"""The config schema: typed dataclasses whose field metadata is the documentation.

Each field carries ``doc`` (one-line description), ``example`` and optional
``check`` (a validator returning an error message or None). The loader walks
these dataclasses, so there is exactly one schema: the types, the defaults,
the descriptions and the checks live here (the checks' building blocks in
``agent.config.fields``) and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.config import fields as check
from agent.config.fields import ROLES, opt


@dataclass
class BackendConfig:
    endpoint_url: str | None = opt(
        "local",
        "Where the buckets and queues live: 'local' runs an embedded S3/SQS/SNS server on "
        "127.0.0.1 for this process; null means AWS; or the URL of an S3-compatible store "
        "(MinIO, Ceph). AWS_ENDPOINT_URL overrides null as in the AWS CLI.",
        "https://minio.example.lan:9000",
        check.endpoint,
    )
    s3_endpoint_url: str | None = opt(
        None,
        "Endpoint for S3 alone (e.g. a store on the LAN while the queues are on AWS); null uses endpoint_url.",
        "https://minio.example.lan:9000",
        check.endpoint,
    )
    sqs_endpoint_url: str | None = opt(
        None, "Endpoint for SQS alone; null uses endpoint_url.", "https://sqs.eu-west-1.amazonaws.com", check.endpoint
    )
    sns_endpoint_url: str | None = opt(
        None,
        "Endpoint for SNS alone (queues.mode sns); null uses endpoint_url.",
        "https://sns.eu-west-1.amazonaws.com",
        check.endpoint,
    )
    region: str = opt("us-east-1", "AWS region (also used to sign requests to S3-compatible stores).", "eu-west-1")
    profile: str | None = opt(None, "Named profile from ~/.aws/config; null uses the standard AWS credential chain.", "thumbdrop")
    addressing_style: str = opt(
        "auto",
        "S3 addressing: auto, path (MinIO and Ceph usually need this) or virtual.",
        "path",
        check.one_of("auto", "path", "virtual"),
    )
    verify_tls: bool = opt(True, "Verify TLS certificates. Turn off only for a test store with a self-signed cert.", True)
    ca_bundle: str | None = opt(None, "Path to a CA bundle for a private certificate authority.", "/etc/ssl/my-ca.pem")
    max_attempts: int = opt(
        5, "botocore retry attempts per request (standard retry mode) before thumbdrop's own retries.", 5, check.at_least(1)
    )
    connect_timeout: float = opt(5.0, "Seconds to wait for a TCP connection.", 5.0, check.at_least(0.1))
    read_timeout: float = opt(60.0, "Seconds to wait for a response (long polls add their own wait).", 60.0, check.at_least(1))
    auto_setup: bool = opt(
        True,
        "run and sync create missing buckets, queues and notifications themselves (as 'thumbdrop setup'). "
        "Turn off where the agent's credentials may not create resources.",
        False,
    )
    max_bandwidth: str | None = opt(
        None,
        "Cap on the agent's total transfer rate, uploads and downloads together: '2MB/s', '500KB/s', "
        "'1MiB/s', '8Mbit/s' or bytes per second; null means no limit.",
        "2MB/s",
        check.rate,
    )


@dataclass
class SourceConfig:
    bucket: str = opt("thumbdrop-source", "Bucket the watched images are uploaded to.", "my-photos", check.bucket_name)
    prefix: str = opt("", "Key prefix for uploads ('' or ending in '/').", "originals/", check.key_prefix)


@dataclass
class ThumbnailsConfig:
    bucket: str = opt(
        "thumbdrop-thumbnails",
        "Bucket the worker writes thumbnails to (may equal source.bucket if the prefixes are disjoint).",
        "my-photos",
        check.bucket_name,
    )
    prefix: str = opt("", "Key prefix for thumbnails ('' or ending in '/').", "thumbs/", check.key_prefix)
    sizes: list[int] = opt([256], "Bounding boxes in pixels; each thumbnail fits inside size x size.", [256, 1024], check.sizes)
    format: str = opt("jpeg", "Output format: jpeg, webp, png or avif.", "webp", check.one_of(*check.FORMATS))
    quality: int = opt(85, "Encoder quality 1-100 (jpeg, webp, avif).", 80, check.between(1, 100))
    progressive: bool = opt(False, "Write progressive JPEGs.", True)
    background: str = opt("#ffffff", "Colour transparent pixels are flattened on for JPEG output.", "#000000", check.color)
    engine: str = opt(
        "pillow",
        "Thumbnail engine: pillow, or pyvips (install thumbdrop[vips]; faster and far leaner on large PNG and "
        "WebP; JPEG and HEIC still go through Pillow).",
        "pyvips",
        check.one_of("pillow", "pyvips"),
    )
    max_pixels: int = opt(
        200_000_000,
        "Largest source image (width x height) accepted; larger ones fail as possible decompression bombs.",
        100_000_000,
        check.at_least(1),
    )


@dataclass
class QueuesConfig:
    events: str = opt("thumbdrop-events", "SQS queue receiving the source bucket's events.", "photos-events", check.queue_name)
    pull: str = opt("thumbdrop-pull", "SQS queue receiving the thumbnail bucket's events.", "photos-pull", check.queue_name)
    mode: str | None = opt(
        None,
        "How bucket events reach the roles: sqs (S3 notifications straight to SQS), sns (through SNS topics, "
        "fan-out) or poll (no queues or topics: the roles list the buckets every poll_seconds; for S3-only stores). "
        "null means sqs, or sns with via_sns: true.",
        "sns",
        check.one_of(*check.EVENT_MODES),
    )
    via_sns: bool = opt(False, "Deprecated: use mode: sns (via_sns: true is the same as mode: sns).", False)
    events_topic: str = opt("thumbdrop-events", "SNS topic for source events (mode sns).", "photos-events", check.queue_name)
    pull_topic: str = opt("thumbdrop-pull", "SNS topic for thumbnail events (mode sns).", "photos-pull", check.queue_name)
    max_receives: int = opt(5, "Receives before a message goes to its dead-letter queue.", 3, check.between(1, 1000))
    visibility_timeout: int = opt(
        120, "Seconds a received message stays hidden; extended while a job runs.", 120, check.between(10, 43200)
    )
    wait_seconds: int = opt(20, "Long-poll wait per receive (SQS allows at most 20).", 20, check.between(0, 20))
    poll_seconds: float = opt(
        10.0,
        "mode poll: seconds between listings of the source and thumbnail prefixes (work of other hosts is found "
        "this late; this agent's own uploads are handed over at once). Each pass costs one request per 1000 keys.",
        10.0,
        check.between(1, 86400),
    )


@dataclass
class WatchConfig:
    folders: list[str] = opt(
        ["~/ThumbDrop/inbox"],
        "Folders watched (recursively) for images. With several, each folder's name becomes the first "
        "part of its keys, so names must differ.",
        ["~/Pictures/inbox", "/srv/camera"],
    )
    include: list[str] = opt(
        ["*.jpg", "*.jpeg", "*.png", "*.webp", "*.gif", "*.tif", "*.tiff", "*.bmp"]
        + ["*.mp4", "*.mov", "*.m4v", "*.mkv", "*.webm", "*.avi", "*.3gp"],
        "File name patterns to upload (case-insensitive). Videos get a poster thumbnail (see video).",
        ["*.jpg", "*.heic"],
    )
    exclude: list[str] = opt(
        [".*", "*~", "*.tmp", "*.part", "*.crdownload"],
        "File and folder name patterns never uploaded (checked before include).",
        [".*", "*.tmp"],
    )
    settle_seconds: float = opt(
        1.0, "A file is uploaded once its size and mtime have not changed for this long.", 2.0, check.between(0.0, 3600)
    )
    rescan_seconds: float = opt(
        300.0,
        "Full rescan of the folders against the bucket every this many seconds (catches missed events "
        "on network mounts); 0 turns it off.",
        600.0,
        check.at_least(0),
    )
    pause_hours: list[str] = opt(
        [],
        "Daily local-time windows when uploads wait (files are still watched and go up when the window "
        "ends); 'HH:MM-HH:MM', a window may wrap past midnight.",
        ["09:00-17:00"],
        check.windows,
    )


@dataclass
class TransferConfig:
    concurrency: int = opt(8, "Uploads and downloads in flight at once.", 4, check.between(1, 64))
    multipart_threshold_mb: int = opt(8, "Files larger than this (MiB) upload in parts.", 16, check.between(5, 5120))
    multipart_chunksize_mb: int = opt(8, "Part size (MiB) for multipart uploads.", 16, check.between(5, 5120))


@dataclass
class WorkerConfig:
    concurrency: int = opt(0, "Thumbnail jobs at once; 0 means one per CPU core.", 2, check.between(0, 64))
    max_memory_mb: int = opt(
        0,
        "Memory (MiB) the thumbnail jobs may take together, estimated from each image's header: a job waits "
        "until it fits, a big one runs alone, one larger than this fails. 0 means a quarter of the RAM (at "
        "least 512, or half the RAM below 1 GiB; at most 4096).",
        768,
        check.between(0, 1_048_576),
    )
    shard: str | None = opt(
        None,
        "mode poll, several workers on one prefix: 'N/M' makes this worker take from the listings only sources whose key "
        "hashes to N modulo M (0-based), so M workers split the key space; null takes every key. Uploads of "
        "its own agent are thumbnailed here whatever the shard.",
        "0/2",
    )


@dataclass
class VideoConfig:
    preview: bool = opt(
        False,
        "Also make a web preview of each video: H.264/AAC MP4 (faststart) next to its poster, named clip.mov.mp4. "
        "Small H.264 sources are remuxed, others re-encoded.",
        True,
    )
    preview_height: int = opt(720, "Largest preview height in pixels (as displayed).", 480, check.between(144, 4320))
    crf: int = opt(23, "x264 quality for previews: 18 (near lossless) to 28 (small); lower is larger.", 26, check.between(0, 51))
    preview_jobs: int = opt(
        1, "Previews encoded at once, in their own pool: images never wait behind an encode.", 2, check.between(1, 16)
    )
    max_seconds: float = opt(
        7200.0,
        "Longest source (seconds) a preview is made of; longer ones get a poster only, with the reason.",
        600.0,
        check.at_least(1),
    )
    max_pixels: int = opt(
        35_389_440,
        "Largest video frame (width x height) accepted; the default is 8K (8192 x 4320).",
        8_294_400,
        check.at_least(1),
    )


@dataclass
class LocalConfig:
    thumbnails_dir: str = opt("~/ThumbDrop/thumbnails", "Where thumbnails are pulled to.", "~/Pictures/thumbs")
    state_dir: str | None = opt(
        None,
        "Where the journal, status and logs live; null uses the platform state dir (~/.local/state/thumbdrop on Linux).",
        "/var/lib/thumbdrop",
    )
    device_name: str | None = opt(None, "Name recorded in each upload's metadata; null uses the host name.", "camera-pi-3")
    log_file: str | None = opt(
        None,
        "Also log to this file, rotated at 5 MB with 5 kept; a bare name is placed in the state dir; "
        "null logs only to the terminal or journal (--log-file overrides).",
        "thumbdrop.log",
    )


@dataclass
class CleanupConfig:
    """Every rule is off (keep everything) except aborting stale multipart uploads, which only frees space."""

    mode: str = opt(
        "agent",
        "Who prunes the buckets: agent (the cleaner role and 'thumbdrop cleanup' apply every rule), lifecycle "
        "('thumbdrop setup' installs S3 lifecycle rules for the age-based rules and multipart aborts, so they also "
        "run with no agent; the agent keeps only the rules S3 cannot express) or both. All agents sharing a "
        "prefix should use the same mode.",
        "both",
        check.one_of("agent", "lifecycle", "both"),
    )
    interval_minutes: float = opt(60.0, "How often the cleaner role applies the policy inside 'run'.", 60.0, check.at_least(1))
    delete_originals: bool = opt(
        False,
        "Delete originals from the source bucket once all their thumbnails exist (in the thumbnail bucket, or "
        "pulled into local.thumbnails_dir). With mode lifecycle S3 cannot check for thumbnails: originals then "
        "expire by age alone. Cannot be combined with delete_orphans.",
        True,
    )
    originals_min_age_days: float = opt(
        0.0,
        "Only delete originals at least this many days old (lifecycle rounds up to whole days, at least 1).",
        30.0,
        check.at_least(0),
    )
    delete_pulled_thumbnails: bool = opt(
        False,
        "Delete thumbnails from the thumbnail bucket once this machine has pulled them (the local copy exists "
        "and has the same size). Agent only. With several pullers on one thumbnails prefix the first would take "
        "them from the others: use thumbnails_max_age_days there.",
        True,
    )
    thumbnails_max_age_days: float | None = opt(
        None,
        "Delete thumbnails from the thumbnail bucket this many days after they were made, pulled or not; null keeps them.",
        90.0,
        check.positive,
    )
    delete_orphans: bool = opt(
        False,
        "Delete thumbnails and failure markers (under thumbnails.prefix + '.thumbdrop-failed/') whose original "
        "is gone from the source bucket. Agent only.",
        True,
    )
    abort_multipart_after_hours: float | None = opt(
        24.0,
        "Abort incomplete multipart uploads under source.prefix and thumbnails.prefix started this many hours ago "
        "(invisible, but billed); null keeps them. Lifecycle rounds up to whole days.",
        48.0,
        check.positive,
    )
    inbox_after_upload: str = opt(
        "keep",
        "What happens to a file in a watch folder once it is uploaded and its thumbnails are in "
        "local.thumbnails_dir: keep, move (to inbox_move_to, same relative path) or delete (only while its "
        "original is in the source bucket: thumbdrop never deletes the last full-size copy).",
        "move",
        check.one_of("keep", "move", "delete"),
    )
    inbox_move_to: str = opt(
        "~/ThumbDrop/done", "Where inbox_after_upload: move puts files; must not be inside a watch folder.", "~/Pictures/uploaded"
    )
    remove_orphan_local_thumbnails: bool = opt(
        False,
        "Remove local thumbnails whose source file this machine uploaded and that is now gone from the watch "
        "folders (and from inbox_move_to), with their copies in the thumbnail bucket so the puller does not bring "
        "them back. Never for a watch folder that is missing, or that holds none of the files uploaded from it: "
        "an unplugged drive or an empty mount point is not a deletion.",
        True,
    )
    remove_unlisted_sizes: bool = opt(
        False,
        "Remove thumbnails of sizes no longer in thumbnails.sizes (and, after a change from one size to several, "
        "those without a size folder), in the thumbnail bucket and in local.thumbnails_dir, once the image's "
        "thumbnails at every current size exist. A bucket thumbnail goes only when its own metadata names its "
        "source. Agent only; try it with 'thumbdrop cleanup --dry-run' first.",
        True,
    )
    max_delete_fraction: float = opt(
        0.5,
        "A run that would delete more than this fraction of the objects under a bucket's prefix (or of the local "
        "thumbnails) stops and asks for 'thumbdrop cleanup --force'. Thumbnails deleted because a verified local "
        "copy exists are not counted. delete_originals with no minimum age keeps the source prefix nearly empty "
        "by design: set 1.0 for it to turn the guard off.",
        0.2,
        check.between(0.0, 1.0),
    )


@dataclass
class TrayConfig:
    backend: str = opt(
        "auto",
        "Tray icon backend for 'thumbdrop tray': auto (gtk on X11 when PyGObject is installed, else appindicator, "
        "else xorg), gtk, appindicator (needs a StatusNotifier host) or xorg (no menu clicks on some panels).",
        "appindicator",
        check.one_of("auto", "gtk", "appindicator", "xorg"),
    )


@dataclass
class MetricsConfig:
    port: int = opt(0, "Serve Prometheus metrics on this port; 0 turns the endpoint off.", 9464, check.between(0, 65535))
    host: str = opt("127.0.0.1", "Address the metrics endpoint listens on (loopback unless a firewall guards it).", "0.0.0.0")
    queue_poll_seconds: float = opt(30.0, "How often queue depths are read for the metrics.", 60.0, check.at_least(5))


@dataclass
class GalleryConfig:
    enabled: bool = opt(
        False,
        "Serve the gallery (your thumbnails and the agent's live status in a browser) on 127.0.0.1 while the agent "
        "runs; 'thumbdrop open' or the tray's 'Open gallery' opens it.",
        True,
    )
    port: int = opt(
        8765,
        "Port on 127.0.0.1 for the gallery; if it is taken a free one is used ('thumbdrop open' finds it); 0 always "
        "picks a free one.",
        8800,
        check.between(0, 65535),
    )


@dataclass
class Config:
    backend: BackendConfig = field(default_factory=BackendConfig, metadata={"doc": "Where the cloud side lives."})
    source: SourceConfig = field(default_factory=SourceConfig, metadata={"doc": "The bucket originals go to."})
    thumbnails: ThumbnailsConfig = field(
        default_factory=ThumbnailsConfig, metadata={"doc": "The thumbnail bucket and how thumbnails are made."}
    )
    queues: QueuesConfig = field(default_factory=QueuesConfig, metadata={"doc": "Event queues and topics."})
    watch: WatchConfig = field(default_factory=WatchConfig, metadata={"doc": "What the uploader watches."})
    transfer: TransferConfig = field(default_factory=TransferConfig, metadata={"doc": "Upload/download tuning."})
    worker: WorkerConfig = field(default_factory=WorkerConfig, metadata={"doc": "The thumbnail worker."})
    video: VideoConfig = field(
        default_factory=VideoConfig, metadata={"doc": "Video posters and previews (needs thumbdrop[video])."}
    )
    local: LocalConfig = field(default_factory=LocalConfig, metadata={"doc": "Local folders."})
    roles: list[str] = opt(
        list(ROLES), "Roles this agent runs: uploader, worker, puller, cleaner.", ["uploader", "puller"], check.roles
    )
    cleanup: CleanupConfig = field(default_factory=CleanupConfig, metadata={"doc": "Cleanup policy."})
    metrics: MetricsConfig = field(default_factory=MetricsConfig, metadata={"doc": "Prometheus metrics for fleets."})
    tray: TrayConfig = field(default_factory=TrayConfig, metadata={"doc": "The tray icon ('thumbdrop tray')."})
    gallery: GalleryConfig = field(
        default_factory=GalleryConfig, metadata={"doc": "The gallery page ('thumbdrop open', 'thumbdrop gallery')."}
    )

    # Where the config came from ("built-in defaults" or a path); not a schema key.
    origin: str = field(default="built-in defaults", metadata={"internal": True})
