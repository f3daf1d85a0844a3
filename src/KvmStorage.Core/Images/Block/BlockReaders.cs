namespace KvmStorage.Core.Images.Block;

/// <summary>Opens images for reading their guest-visible contents, like the source side of <c>qemu-img convert</c>.</summary>
public static class BlockReaders
{
    /// <summary>
    /// Opens <paramref name="path"/> and its backing chain read-only. Fails with <c>ImageInUse</c> when a running
    /// QEMU holds the image for writing (unless <see cref="BlockOpenOptions.ForceShare"/>), <c>ImageEncrypted</c>
    /// for encrypted images, <c>BlockFormatNotReadable</c> for formats without a block reader, and the inspector's
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
            layers.Add(OpenLayer(info));
            foreach (ImageInfo backing in info.BackingChain)
            {
                layers.Add(OpenLayer(backing));
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

    internal static ImageLayer OpenLayer(ImageInfo info)
    {
        if (info.Encryption is not null)
        {
            throw BlockErrors.NotSupported(BlockErrorIds.ImageEncrypted, info.Path, $"the image is encrypted ({info.Encryption}); encrypted images cannot be read.");
        }

        HostFile file = HostFile.Open(info.Path);
        try
        {
            return ImageFormatRegistry.Driver(info.ImageFormat).OpenLayer(file, info);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }
}
