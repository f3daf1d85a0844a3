namespace KvmStorage.Core.Images.Block;

/// <summary>How <see cref="BlockReaders.Open"/> opens an image for reading.</summary>
public sealed class BlockOpenOptions
{
    /// <summary>Format of the image itself; null probes it (<c>qemu-img convert -f</c>).</summary>
    public ImageFormat? Format { get; init; }

    /// <summary>Read even while a running QEMU holds the image for writing (<c>qemu-img -U</c>): skips the lock check.</summary>
    public bool ForceShare { get; init; }

    /// <summary>Maps an absolute backing path, as the host sees it, to where it lies on this machine (see <see cref="ImageInspectOptions.HostPathResolver"/>).</summary>
    public Func<string, string>? HostPathResolver { get; init; }
}
