namespace KvmStorage.Core.Images.Block;

/// <summary>Opens images for reading their guest-visible contents, like the source side of <c>qemu-img convert</c>.</summary>
public static class BlockReaders
{
    /// <summary>
    /// Opens <paramref name="path"/> and its backing chain read-only. Fails with <c>ImageInUse</c> when a running
    /// QEMU holds the image for writing (unless <see cref="BlockOpenOptions.ForceShare"/>), <c>PassphraseRequired</c>
    /// or <c>WrongPassphrase</c> for LUKS images without the right passphrase, <c>ImageEncrypted</c> for other encryption, <c>BlockFormatNotReadable</c> for formats without a block reader, and the inspector's
    /// errors for malformed headers and broken chains.
    /// </summary>
    public static IBlockReader Open(string path, BlockOpenOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        options ??= new BlockOpenOptions();

        // The inspector checks QEMU's locks of every image in the chain unless told to share (qemu-img -U).
        ImageInfo info = ImageInspector.Inspect(path, new ImageInspectOptions
        {
            ForceShare = options.ForceShare,
            Format = options.Format,
            BackingRule = options.BackingRule,
        });

        var layers = new List<ImageLayer>(1 + info.BackingChain.Count);
        try
        {
            layers.Add(OpenLayer(info, options.Passphrase, options.MetadataOnly));
            foreach (ImageInfo backing in info.BackingChain)
            {
                layers.Add(OpenLayer(backing, options.Passphrase, options.MetadataOnly));
            }

            return new ChainedBlockReader(info, [.. layers]);
        }
        catch
        {
            foreach (ImageLayer layer in layers)
            {
                layer.Dispose();
            }

            throw;
        }
    }

    /// <summary>
    /// Opens the chain an inspection already read (<paramref name="info"/> and its <see cref="ImageInfo.BackingChain"/>),
    /// without inspecting it again; for metadata reads (no read-ahead). The chain must be whole: a backing file that
    /// is missing or was refused makes it <c>BackingFileNotFound</c>.
    /// </summary>
    internal static ChainedBlockReader OpenInspected(ImageInfo info)
    {
        ImageInfo last = info.BackingChain.Count > 0 ? info.BackingChain[^1] : info;
        if (last.BackingFile is not null || info.BackingRefusal is not null)
        {
            throw new Errors.KvmStorageException(Errors.ErrorKind.NotFound, ImageErrorIds.BackingFileNotFound, $"the backing chain of '{info.Path}' is not whole.", info.Path);
        }

        var layers = new List<ImageLayer>(1 + info.BackingChain.Count);
        try
        {
            layers.Add(OpenLayer(info, null, metadataOnly: true));
            foreach (ImageInfo backing in info.BackingChain)
            {
                layers.Add(OpenLayer(backing, null, metadataOnly: true));
            }

            return new ChainedBlockReader(info, [.. layers]);
        }
        catch
        {
            foreach (ImageLayer layer in layers)
            {
                layer.Dispose();
            }

            throw;
        }
    }

    /// <summary>
    /// Whether <paramref name="passphrase"/> opens every encrypted image of <paramref name="path"/>'s chain: throws
    /// <c>WrongPassphrase</c> (or the header's errors) when not. Nothing is written.
    /// </summary>
    public static void VerifyPassphrase(string path, ImagePassphrase passphrase, BackingFileRule? backingRule)
    {
        using IBlockReader reader = Open(path, new BlockOpenOptions { ForceShare = true, Passphrase = passphrase, BackingRule = backingRule });
    }

    /// <summary>One layer; an encrypted one is unlocked with <paramref name="passphrase"/> (<c>PassphraseRequired</c> without one).</summary>
    internal static ImageLayer OpenLayer(ImageInfo info, ImagePassphrase? passphrase = null, bool metadataOnly = false)
    {
        HostFile file = HostFile.Open(info.Path, metadataOnly);
        try
        {
            return ImageFormatRegistry.Driver(info.ImageFormat).OpenLayer(file, info, passphrase);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }
}
