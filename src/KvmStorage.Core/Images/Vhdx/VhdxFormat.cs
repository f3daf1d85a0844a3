using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Check;
using KvmStorage.Core.Images.Convert;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Vhdx;

/// <summary>The VHDX driver (qemu's block/vhdx.c): read, check, create dynamic and fixed images, convert to them.</summary>
internal sealed class VhdxFormat : IImageFormat
{
    public IImageFormatReader Reader { get; } = new VhdxReader();

    public IImageFormatWriter? Writer { get; } = new VhdxWriter();

    public ConvertOutput? ConvertOutput { get; } = new Output();

    public ImageLayer OpenLayer(HostFile file, ImageInfo info) => VhdxLayer.Open(file, info);

    public ImageCheckResult Check(SafeFileHandle handle, ImageProbe probe, ImageRepairMode repair, IProgress<ImageProgress>? progress, CancellationToken cancellationToken) =>
        AllocationTableCheck.Run(handle, probe, Reader, repair, VhdxChecker.Walk, cancellationToken);

    /// <summary>A VHDX for Hyper-V: dynamic (blocks appended as data arrives) or fixed.</summary>
    private sealed class Output : ConvertOutput
    {
        public override string Name => "vhdx image";

        public override bool TakesPreallocation => false;

        public override bool TakesFixed => true;

        public override int Unit(ConvertOptions options) => BlockConvertTarget.DefaultUnit;

        public override void Validate(ulong size, string path, ConvertOptions options) => Layout(size, path, options);

        // Zeros inside allocated blocks stay holes, so the space used is the metadata plus the data itself.
        public override ulong EstimateSize(ulong size, ulong data, ConvertOptions options) => Layout(size, string.Empty, options).DataOffset + data;

        public override ConvertTarget CreateTarget(SafeFileHandle handle, string tempPath, string finalPath, ulong size, ConvertOptions options) =>
            new VhdxConvertTarget(handle, size, Layout(size, finalPath, options));

        private static VhdxLayout Layout(ulong size, string path, ConvertOptions options) =>
            VhdxLayout.For(size, options.ClusterSize, options.Fixed, path, message => Invalid(path, message));
    }
}
