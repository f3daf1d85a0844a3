using KvmStorage.Core.Images.Block;

namespace KvmStorage.Core.Images.Convert;

/// <summary>Opens only the top image of a chain, so its extents tell what the overlay itself holds (qemu-img map without the backing file).</summary>
public static class TopLayerReader
{
    /// <summary>
    /// The top image alone: ranges it leaves to its backing file report as <see cref="ExtentKind.Unallocated"/> and read as zeros.
    /// Used as <see cref="ConvertOptions.AllocationSource"/> when a copy keeps the backing file.
    /// </summary>
    public static IBlockReader Open(string path, BlockOpenOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        options ??= new BlockOpenOptions();
        ImageInfo info = ImageInspector.Inspect(path, new ImageInspectOptions
        {
            ForceShare = options.ForceShare,
            Format = options.Format,
            ResolveBackingChain = false,
        });
        return new ChainedBlockReader(info, [BlockReaders.OpenLayer(info, options.Passphrase)]);
    }
}
