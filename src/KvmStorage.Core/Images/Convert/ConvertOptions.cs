using KvmStorage.Core.Images.Block;

namespace KvmStorage.Core.Images.Convert;

/// <summary>What <see cref="ImageConverter.Convert"/> writes. Defaults match <c>qemu-img convert -O qcow2</c>.</summary>
public sealed record ConvertOptions
{
    /// <summary>Output format: raw, qcow2, vmdk (streamOptimized), vhdx, vpc or vdi.</summary>
    public ImageFormat Format { get; init; } = ImageFormat.Qcow2;

    /// <summary>qcow2: store clusters compressed (those that do not shrink are stored as they are). vmdk is always compressed.</summary>
    public bool Compress { get; init; }

    /// <summary>qcow2 codec used with <see cref="Compress"/>.</summary>
    public CompressionType CompressionType { get; init; }

    /// <summary>Allocation of the output: Off (sparse), Metadata (qcow2), Falloc, Full. Not with compression.</summary>
    public Preallocation Preallocation { get; init; }

    /// <summary>qcow2 cluster size (512 to 2 MiB, default 64 KiB); vhdx block size (1 to 256 MiB, default by size as qemu-img).</summary>
    public uint? ClusterSize { get; init; }

    /// <summary>vhdx, vpc and vdi: a fixed image (qemu's <c>subformat=fixed</c>, vdi's <c>static=on</c>) rather than a dynamic one.</summary>
    public bool Fixed { get; init; }

    /// <summary>vpc: record the size itself rather than the nearest CHS geometry (qemu's <c>force_size</c>), rounded up to whole MiB (Azure).</summary>
    public bool ForceSize { get; init; }

    /// <summary>qcow2 compatibility level: "1.1" (version 3, default) or "0.10" (version 2).</summary>
    public string Compat { get; init; } = "1.1";

    /// <summary>
    /// qcow2 only: the output becomes an overlay of this backing file (recorded as given). Only the ranges
    /// <see cref="AllocationSource"/> reports as allocated are copied; the rest is left to the backing file.
    /// </summary>
    public string? BackingFile { get; init; }

    /// <summary>The backing file's format, recorded with <see cref="BackingFile"/>.</summary>
    public ImageFormat? BackingFormat { get; init; }

    /// <summary>
    /// With <see cref="BackingFile"/>: the top image alone (not through its chain). Its Data and Zero extents
    /// say which clusters the overlay must hold; their content is still read from the source (the whole chain).
    /// </summary>
    public IBlockReader? AllocationSource { get; init; }

    /// <summary>Read the source even while a running QEMU writes it (qemu-img convert -U): the copy is of a moving image.</summary>
    public bool SourceForceShare { get; init; }

    /// <summary>Unlocks an encrypted source (the volume callers open as the source); the caller keeps and disposes it.</summary>
    public ImagePassphrase? SourcePassphrase { get; init; }

    /// <summary>Encrypt the output with LUKS: a LUKS-encrypted qcow2, or for raw a LUKS file. Not with compression or preallocation.</summary>
    public ImageEncryption? Encryption { get; init; }

    /// <summary>Replace an existing destination (atomically, by rename, once the new image is complete).</summary>
    public bool Overwrite { get; init; }

    /// <summary>Permissions of the new file, exact regardless of the umask.</summary>
    public UnixFileMode Mode { get; init; } = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    /// <summary>Owner uid, or -1 to keep the caller's.</summary>
    public int Owner { get; init; } = -1;

    /// <summary>Group gid, or -1 to keep the caller's.</summary>
    public int Group { get; init; } = -1;

    /// <summary>Worker threads for reading and compressing; null uses every core.</summary>
    public int? Threads { get; init; }

    /// <summary>Skip the free-space check (tests and callers that reserved space themselves).</summary>
    public bool SkipSpaceCheck { get; init; }
}

/// <summary>Stable error identifiers of conversions.</summary>
public static class ConvertErrorIds
{
    /// <summary>The destination file system has less free space than the estimated output size.</summary>
    public const string InsufficientSpace = "InsufficientSpace";

    /// <summary>The options contradict each other or the format (for example compression with preallocation).</summary>
    public const string InvalidConvertOptions = "InvalidConvertOptions";

    /// <summary>The output format cannot be written by the converter.</summary>
    public const string UnsupportedTargetFormat = "UnsupportedTargetFormat";

    /// <summary>The destination exists and overwriting was not asked for.</summary>
    public const string DestinationExists = "DestinationExists";

    /// <summary>The destination's folder does not exist.</summary>
    public const string DestinationFolderNotFound = "DestinationFolderNotFound";

    /// <summary>The destination is the source itself.</summary>
    public const string DestinationIsSource = "DestinationIsSource";

    /// <summary>Reading the source or writing the output failed.</summary>
    public const string ConvertFailed = "ConvertFailed";
}
