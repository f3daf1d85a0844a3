using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Check;
using KvmStorage.Core.Images.Convert;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Vmdk;

/// <summary>The VMDK driver (qemu's block/vmdk.c): read, check, create monolithicSparse, convert to streamOptimized.</summary>
internal sealed class VmdkFormat : IImageFormat
{
    public IImageFormatReader Reader { get; } = new VmdkReader();

    public IImageFormatWriter? Writer { get; } = new VmdkWriter();

    public ConvertOutput? ConvertOutput { get; } = new Output();

    public ImageLayer OpenLayer(HostFile file, ImageInfo info) => VmdkLayer.Open(file, info);

    public ImageCheckResult Check(SafeFileHandle handle, ImageProbe probe, ImageRepairMode repair, IProgress<ImageProgress>? progress, CancellationToken cancellationToken) =>
        AllocationTableCheck.Run(handle, probe, Reader, repair, VmdkChecker.Walk, cancellationToken);

    /// <summary>A streamOptimized output: every grain compressed, written in one pass.</summary>
    private sealed class Output : ConvertOutput
    {
        public override string Name => "streamOptimized vmdk";

        public override bool TakesPreallocation => false;

        public override int Unit(ConvertOptions options) => VmdkStreamConvertTarget.GrainBytes;

        public override void Validate(ulong size, string path, ConvertOptions options)
        {
            if (size > VmdkWriter.MaxVirtualSize)
            {
                throw Invalid(path, $"A vmdk image holds at most {VmdkWriter.MaxVirtualSize} bytes.");
            }
        }

        public override ulong EstimateSize(ulong size, ulong data, ConvertOptions options)
        {
            ulong grains = (size + 65535) / 65536;
            ulong tables = (grains + 511) / 512;
            ulong directorySectors = ((tables * 4) + 511) / 512;
            ulong metadata = (1 + 20 + (2 * (directorySectors + (tables * 4)))) * 512;
            return metadata + 65536 + data + (data / 64) + (data / 65536 * 512) + 512;
        }

        public override ConvertTarget CreateTarget(SafeFileHandle handle, string tempPath, string finalPath, ulong size, ConvertOptions options) =>
            new VmdkStreamConvertTarget(handle, finalPath, size);
    }
}
