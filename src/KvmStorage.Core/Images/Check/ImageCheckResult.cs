namespace KvmStorage.Core.Images.Check;

/// <summary>What <see cref="ImageChecker.Check(string, ImageRepairMode, IProgress{ImageProgress}?, CancellationToken)"/> may change (qemu-img check's <c>-r</c>).</summary>
public enum ImageRepairMode
{
    /// <summary>Only report; the image is opened read-only.</summary>
    None,

    /// <summary>Free leaked clusters (refcount higher than the references to the cluster).</summary>
    Leaks,

    /// <summary>Fix everything that can be fixed: entries pointing outside the file, copied flags, and rebuild the refcounts.</summary>
    All,
}

/// <summary>The kind of one finding of a check.</summary>
public enum ImageCorruptionKind
{
    /// <summary>A cluster has fewer references counted than structures pointing at it: writing could destroy data.</summary>
    RefcountTooLow,

    /// <summary>A cluster is referenced by more than one structure while its refcount says it is not shared.</summary>
    ClusterUsedTwice,

    /// <summary>A cluster's refcount is higher than its references: space is wasted, nothing is at risk.</summary>
    LeakedCluster,

    /// <summary>A table or cluster lies (a cluster or more) past the end of the file.</summary>
    PastEndOfFile,

    /// <summary>A table or data cluster offset is not aligned to a cluster.</summary>
    Misaligned,

    /// <summary>A compressed cluster descriptor is invalid (copied flag set, subcluster bits, data file).</summary>
    InvalidCompressedDescriptor,

    /// <summary>The copied flag of an L1 or L2 entry disagrees with the refcount of the cluster it points at.</summary>
    CopiedFlagMismatch,

    /// <summary>A table entry has reserved bits set.</summary>
    ReservedBitsSet,

    /// <summary>A refcount block is misaligned, outside the file or shared; the refcounts must be rebuilt.</summary>
    InvalidRefcountBlock,

    /// <summary>A snapshot table entry is invalid.</summary>
    InvalidSnapshot,

    /// <summary>A refcount would overflow the image's refcount width.</summary>
    RefcountOverflow,

    /// <summary>A table entry of a foreign format (grain, block allocation table) is invalid.</summary>
    InvalidTableEntry,

    /// <summary>Part of the image could not be checked (I/O error, unreadable refcount block).</summary>
    CheckError,
}

/// <summary>One problem found by a check, with the host (file) offset it concerns.</summary>
public sealed record ImageCorruption(ulong Offset, ImageCorruptionKind Kind, string Message)
{
    /// <summary>Leaks are not corruptions: they only waste space.</summary>
    public bool IsLeak => Kind == ImageCorruptionKind.LeakedCluster;

    public override string ToString() => $"0x{Offset:x}: {Kind}: {Message}";
}

/// <summary>The result of checking (and perhaps repairing) an image, like <c>qemu-img check --output=json</c>.</summary>
public sealed record ImageCheckResult
{
    /// <summary>The file checked (the host's view of it when a cmdlet reports it).</summary>
    public required string Path { get; init; }

    /// <summary>qemu-img's name of the format (<c>qcow2</c>, <c>raw</c>, <c>vmdk</c>, …), the one spelling libvirt's XML uses too.</summary>
    public string Format => ImageFormat.ToQemuName();

    /// <summary>The format as the engine handles it.</summary>
    internal ImageFormat ImageFormat { get; init; }

    /// <summary>Corruptions plus parts that could not be checked, after any repair (qemu's corruptions + check-errors).</summary>
    public ulong Errors => CorruptionCount + CheckErrors;

    /// <summary>Corruptions left (qemu's <c>corruptions</c>).</summary>
    public ulong CorruptionCount { get; init; }

    /// <summary>Parts that could not be checked (qemu's <c>check-errors</c>).</summary>
    public ulong CheckErrors { get; init; }

    /// <summary>Leaked clusters left (qemu's <c>leaks</c>).</summary>
    public ulong Leaks { get; init; }

    /// <summary>Every finding left after any repair, leaks included (kind <see cref="ImageCorruptionKind.LeakedCluster"/>).</summary>
    public IReadOnlyList<ImageCorruption> Corruptions { get => corruptions; init => corruptions = Collections.ValueList.Of(value); }

    private readonly IReadOnlyList<ImageCorruption> corruptions = Collections.ValueList.Empty<ImageCorruption>();

    public ulong LeaksFixed { get; init; }

    public ulong CorruptionsFixed { get; init; }

    /// <summary>The end of the last cluster in use (qemu's <c>image-end-offset</c>); 0 for formats without clusters.</summary>
    public ulong ImageEndOffset { get; init; }

    /// <summary>Clusters of guest data the virtual size spans.</summary>
    public ulong TotalClusters { get; init; }

    public ulong AllocatedClusters { get; init; }

    public ulong FragmentedClusters { get; init; }

    public ulong CompressedClusters { get; init; }

    /// <summary>The qcow2 dirty bit as found after any repair (refcounts may be stale).</summary>
    public bool DirtyFlag { get; init; }

    /// <summary>The qcow2 corrupt bit as found after any repair (qemu refuses to write the image).</summary>
    public bool MarkedCorrupt { get; init; }

    /// <summary>Whether the format has anything to check (raw has not).</summary>
    public bool Checked { get; init; } = true;

    /// <summary>No errors, no leaks and not marked corrupt.</summary>
    public bool Passed => Errors == 0 && Leaks == 0 && !MarkedCorrupt;
}
