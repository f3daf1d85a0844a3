namespace KvmStorage.Core.Images;

/// <summary>How <see cref="ImageInspector.Inspect"/> reads an image.</summary>
public sealed class ImageInspectOptions
{
    /// <summary>Read even while a running QEMU holds the image for writing (<c>qemu-img info -U</c>).</summary>
    public bool ForceShare { get; init; }

    /// <summary>Follow the backing chain and fill <see cref="ImageInfo.BackingChain"/> (default true).</summary>
    public bool ResolveBackingChain { get; init; } = true;

    /// <summary>
    /// Report the image even when a backing file is missing or refused by <see cref="BackingRule"/> (the chain stops
    /// there; a refusal is reported in <see cref="ImageInfo.BackingRefusal"/>, and the refused file is never read).
    /// </summary>
    public bool AllowMissingBacking { get; init; }

    /// <summary>Format of the inspected image itself; null probes it (<c>qemu-img info -f</c>).</summary>
    public ImageFormat? Format { get; init; }

    /// <summary>Format of backing files whose image does not record one; null probes them.</summary>
    public ImageFormat? BackingFormat { get; init; }

    /// <summary>Longest backing chain followed before failing with <c>BackingChainTooDeep</c>.</summary>
    public int MaxChainDepth { get; init; } = 64;

    /// <summary>How recorded backing names become files here and which may be read (see <see cref="BackingFileRule"/>); null is qemu's unrestricted rule.</summary>
    public BackingFileRule? BackingRule { get; init; }
}
