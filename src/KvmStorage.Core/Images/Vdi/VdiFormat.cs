using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Check;
using KvmStorage.Core.Images.Convert;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Vdi;

/// <summary>The VDI driver (qemu's block/vdi.c): read, check, create dynamic and static images, convert to them.</summary>
internal sealed class VdiFormat : IImageFormat
{
    public IImageFormatReader Reader { get; } = new VdiReader();

    public IImageFormatWriter? Writer { get; } = new VdiWriter();

    public ConvertOutput? ConvertOutput { get; } = new Output();

    public ImageLayer OpenLayer(HostFile file, ImageInfo info) => VdiLayer.Open(file, info);

    public ImageCheckResult Check(SafeFileHandle handle, ImageProbe probe, ImageRepairMode repair, IProgress<ImageProgress>? progress, CancellationToken cancellationToken) =>
        AllocationTableCheck.Run(handle, probe, Reader, repair, VdiChecker.Walk, cancellationToken);

    /// <summary>A VDI for VirtualBox: dynamic (blocks appended as data arrives) or static.</summary>
    private sealed class Output : ConvertOutput
    {
        public override string Name => "vdi image";

        public override bool TakesPreallocation => false;

        public override bool TakesFixed => true;

        public override int Unit(ConvertOptions options) => BlockConvertTarget.DefaultUnit;

        public override void Validate(ulong size, string path, ConvertOptions options)
        {
            if (options.ClusterSize is { } cs && cs != VdiLayout.BlockSize)
            {
                throw Invalid(path, $"vdi images have 1 MiB blocks; the block size cannot be {cs}.");
            }

            _ = VdiLayout.For(size, options.Fixed, path);
        }

        // Zeros inside allocated blocks stay holes: the space used is the header, the block map and the data itself.
        public override ulong EstimateSize(ulong size, ulong data, ConvertOptions options) => VdiLayout.For(size, options.Fixed, string.Empty).DataOffset + data;

        public override ConvertTarget CreateTarget(SafeFileHandle handle, string tempPath, string finalPath, ulong size, ConvertOptions options) =>
            new VdiConvertTarget(handle, size, VdiLayout.For(size, options.Fixed, finalPath));
    }
}
