using KvmStorage.Core.Images;

namespace KvmStorage.Core.Volumes;

/// <summary>A disk image as the module reports it: where it is, what it is, and who uses it.</summary>
public sealed class StorageVolume
{
    private readonly IReadOnlyList<string> chain = Collections.ValueList.Empty<string>();
    private readonly IReadOnlyList<SnapshotInfo> snapshots = Collections.ValueList.Empty<SnapshotInfo>();
    private readonly IReadOnlyList<string> attachedTo = Collections.ValueList.Empty<string>();

    public required string Name { get; init; }

    /// <summary>The pool whose folder holds the image; null for an image outside every pool.</summary>
    public string? Pool { get; init; }

    /// <summary>The path as the host sees it (what libvirt's XML holds).</summary>
    public required string Path { get; init; }

    /// <summary>Where the file lies under the session's host root.</summary>
    public required string LocalPath { get; init; }

    /// <summary>qemu-img's name of the format (<c>qcow2</c>, <c>raw</c>, <c>vmdk</c>, …), the one spelling libvirt's XML uses too.</summary>
    public string Format => ImageFormat.ToQemuName();

    /// <summary>The format as the engine handles it.</summary>
    internal ImageFormat ImageFormat { get; init; }

    /// <summary>Virtual (guest-visible) size in bytes.</summary>
    public required ulong Capacity { get; init; }

    /// <summary>Bytes allocated on the host.</summary>
    public required ulong Allocation { get; init; }

    /// <summary>Length of the file in bytes.</summary>
    public required ulong FileLength { get; init; }

    public uint? ClusterSize { get; init; }

    /// <summary>Fixed, Dynamic or Differencing, as Get-VHD's VhdType: how the image keeps the guest's data.</summary>
    public DiskType DiskType { get; init; } = DiskType.Dynamic;

    /// <summary>
    /// The smallest size the volume can shrink to without cutting the guest's last partition (GPT: with room for its
    /// backup table), in bytes, as Get-VHD's MinimumSize; null when no partition table can be read.
    /// </summary>
    public ulong? MinimumSize { get; init; }

    /// <summary>How scattered the image's own clusters or blocks are in its file, in percent (qemu-img check's "fragmented"); null when unknown.</summary>
    public double? FragmentationPercentage { get; init; }

    /// <summary>The guest's logical sector size, where the format records one (vhdx, vhd, vdi).</summary>
    public uint? LogicalSectorSize { get; init; }

    /// <summary>The guest's physical sector size, where the format records one (vhdx, vhd).</summary>
    public uint? PhysicalSectorSize { get; init; }

    /// <summary>The backing file, resolved to a full host path; null for a standalone image.</summary>
    public string? BackingPath { get; init; }

    /// <summary>The backing file as the image records it (relative or absolute).</summary>
    public string? BackingFile { get; init; }

    public string? BackingFormat { get; init; }

    /// <summary>The whole chain, this image first, then each backing file (host paths).</summary>
    public IReadOnlyList<string> Chain { get => chain; init => chain = Collections.ValueList.Of(value); }

    /// <summary>
    /// Why the chain stops at a backing file that was not read: the module's rule refused it (a raw file outside every
    /// pool, a name leaving the host root). Null when the chain is whole or a backing file is merely missing.
    /// </summary>
    public string? BackingRefusal { get; init; }

    public IReadOnlyList<SnapshotInfo> Snapshots { get => snapshots; init => snapshots = Collections.ValueList.Of(value); }

    /// <summary><c>1.1</c> or <c>0.10</c> for qcow2; null for other formats.</summary>
    public string? Compat { get; init; }

    public bool Dirty { get; init; }

    public bool Corrupt { get; init; }

    /// <summary>How the image is encrypted: <c>luks</c> (LUKS, in qcow2 or as a LUKS file), <c>aes</c> (qcow's legacy AES), or null.</summary>
    public string? Encryption { get; init; }

    /// <summary>Whether the image is encrypted (read from its header; no passphrase needed).</summary>
    public bool Encrypted => Encryption is not null;

    public UnixFileMode Mode { get; init; }

    public int Owner { get; init; }

    public int Group { get; init; }

    /// <summary>The VMs that use this image, directly or as a backing file of an attached overlay.</summary>
    public IReadOnlyList<string> AttachedTo { get => attachedTo; init => attachedTo = Collections.ValueList.Of(value); }

    /// <summary>What the image engine read from the file.</summary>
    public required ImageInfo Image { get; init; }

    public required string HostName { get; init; }

    public override string ToString() => Path;
}

/// <summary>One entry of a volume listing: the volume, or why the file could not be read.</summary>
public sealed record VolumeReadResult(string File, StorageVolume? Volume, Exception? Error);

/// <summary>What New-Volume asks for: the image options plus where it goes.</summary>
public sealed record VolumeCreateRequest
{
    public required string Pool { get; init; }

    public required string Name { get; init; }

    public required ImageCreateOptions Image { get; init; }

    /// <summary>The backing image as a host path (absolute), before it is recorded relative or absolute.</summary>
    public string? BackingPath { get; init; }

    /// <summary>Record the backing file relative to the new image's folder instead of as an absolute host path.</summary>
    public bool RelativeBacking { get; init; }
}
