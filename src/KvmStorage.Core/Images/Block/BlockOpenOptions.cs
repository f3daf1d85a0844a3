namespace KvmStorage.Core.Images.Block;

/// <summary>How <see cref="BlockReaders.Open"/> opens an image for reading.</summary>
public sealed class BlockOpenOptions
{
    /// <summary>Format of the image itself; null probes it (<c>qemu-img convert -f</c>).</summary>
    public ImageFormat? Format { get; init; }

    /// <summary>Read even while a running QEMU holds the image for writing (<c>qemu-img -U</c>): skips the lock check.</summary>
    public bool ForceShare { get; init; }

    /// <summary>How recorded backing names become files here and which may be read (see <see cref="BackingFileRule"/>); null is qemu's unrestricted rule.</summary>
    public BackingFileRule? BackingRule { get; init; }

    /// <summary>Unlocks LUKS-encrypted images of the chain (qemu's key-secret); the caller keeps and disposes it.</summary>
    public ImagePassphrase? Passphrase { get; init; }

    /// <summary>Only metadata will be read (a map): the files are opened without read-ahead (see <see cref="HostFile.Open"/>).</summary>
    internal bool MetadataOnly { get; init; }

    internal BlockOpenOptions ForMetadata() => new() { Format = Format, ForceShare = ForceShare, BackingRule = BackingRule, Passphrase = Passphrase, MetadataOnly = true };
}
