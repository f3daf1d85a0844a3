using KvmStorage.Core.Images.Qcow2;

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
            return info.ImageFormat switch
            {
                ImageFormat.Raw => new RawLayer(file, info.VirtualSize, 0),
                ImageFormat.Qcow2 => Qcow2Layer.Open(file, info),
                ImageFormat.Vmdk => VmdkLayer.Open(file, info),
                ImageFormat.Vdi => VdiLayer.Open(file, info),
                ImageFormat.Vpc => VpcLayer.Open(file, info),
                ImageFormat.Vhdx => VhdxLayer.Open(file, info),
                ImageFormat.Luks => throw BlockErrors.NotSupported(BlockErrorIds.ImageEncrypted, info.Path, "the image is LUKS-encrypted; encrypted images cannot be read."),
                _ => throw BlockErrors.NotSupported(BlockErrorIds.FormatNotReadable, info.Path, $"{info.Format} images cannot be read by the block layer."),
            };
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }
}

/// <summary>A raw image, or a raw region of another format's file: data where the file has data, holes read as zeros.</summary>
internal sealed class RawLayer : ImageLayer
{
    private readonly ulong _start;

    public RawLayer(HostFile file, ulong size, ulong start)
        : base(file, size)
    {
        _start = start;
    }

    public override LayerRun Map(ulong offset, ulong maxLength)
    {
        (bool data, ulong length) = File.Probe(_start + offset, maxLength);
        return data ? new LayerRun(length, RunKind.Data, _start + offset) : new LayerRun(length, RunKind.Zero);
    }
}
