using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Check;
using KvmStorage.Core.Images.Convert;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Vpc;

/// <summary>The VHD driver (qemu's block/vpc.c): read, check, create dynamic and fixed images, convert to them.</summary>
internal sealed class VpcFormat : IImageFormat
{
    public IImageFormatReader Reader { get; } = new VpcReader();

    public IImageFormatWriter? Writer { get; } = new VpcWriter();

    public ConvertOutput? ConvertOutput { get; } = new Output();

    public ImageLayer OpenLayer(HostFile file, ImageInfo info) => VpcLayer.Open(file, info);

    public ImageCheckResult Check(SafeFileHandle handle, ImageProbe probe, ImageRepairMode repair, IProgress<ImageProgress>? progress, CancellationToken cancellationToken) =>
        AllocationTableCheck.Run(handle, probe, Reader, repair, VpcChecker.Walk, cancellationToken);

    /// <summary>A VHD for Hyper-V, Virtual PC or Azure (fixed, size forced to whole MiB).</summary>
    private sealed class Output : ConvertOutput
    {
        public override string Name => "vpc image";

        public override bool TakesPreallocation => false;

        public override bool TakesFixed => true;

        public override bool TakesForceSize => true;

        public override int Unit(ConvertOptions options) => BlockConvertTarget.DefaultUnit;

        public override void Validate(ulong size, string path, ConvertOptions options)
        {
            if (options.ClusterSize is { } cs && cs != VpcLayout.BlockSize)
            {
                throw Invalid(path, $"vpc images have 2 MiB blocks; the block size cannot be {cs}.");
            }

            _ = VpcLayout.For(size, options.Fixed, options.ForceSize, path);
        }

        // Zeros inside allocated blocks stay holes: the space used is the metadata, the bitmaps and the data itself.
        public override ulong EstimateSize(ulong size, ulong data, ConvertOptions options)
        {
            VpcLayout layout = VpcLayout.For(size, options.Fixed, options.ForceSize, string.Empty);
            ulong blocks = Math.Min(layout.TableEntries, (data + BlockConvertTarget.DefaultUnit - 1) / BlockConvertTarget.DefaultUnit);
            return layout.Fixed ? data + 512 : layout.FirstBlockOffset + (blocks * VpcLayout.BitmapSize) + data + 512;
        }

        public override ConvertTarget CreateTarget(SafeFileHandle handle, string tempPath, string finalPath, ulong size, ConvertOptions options) =>
            new VpcConvertTarget(handle, size, VpcLayout.For(size, options.Fixed, options.ForceSize, finalPath));
    }
}
