namespace KvmStorage.Core.Images;

/// <summary>How <see cref="ImageInspector.Inspect"/> reads an image.</summary>
public sealed class ImageInspectOptions
{
    /// <summary>Read even while a running QEMU holds the image for writing (<c>qemu-img info -U</c>).</summary>
    public bool ForceShare { get; init; }

    /// <summary>Follow the backing chain and fill <see cref="ImageInfo.BackingChain"/> (default true).</summary>
    public bool ResolveBackingChain { get; init; } = true;

    /// <summary>Report the image even when a backing file is missing (the chain stops there).</summary>
    public bool AllowMissingBacking { get; init; }

    /// <summary>Format of the inspected image itself; null probes it (<c>qemu-img info -f</c>).</summary>
    public ImageFormat? Format { get; init; }

    /// <summary>Format of backing files whose image does not record one; null probes them.</summary>
    public ImageFormat? BackingFormat { get; init; }

    /// <summary>Longest backing chain followed before failing with <c>BackingChainTooDeep</c>.</summary>
    public int MaxChainDepth { get; init; } = 64;

    /// <summary>Maps an absolute backing path, as the host sees it, to where it lies on this machine (the host root); null keeps it.</summary>
    public Func<string, string>? HostPathResolver { get; init; }
}
