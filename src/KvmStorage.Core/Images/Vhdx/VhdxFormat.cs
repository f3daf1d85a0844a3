using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Check;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Vhdx;

/// <summary>The VHDX driver (qemu's block/vhdx.c): read and check (no create or conversion).</summary>
internal sealed class VhdxFormat : IImageFormat
{
    public IImageFormatReader Reader { get; } = new VhdxReader();

    public ImageLayer OpenLayer(HostFile file, ImageInfo info) => VhdxLayer.Open(file, info);

    public ImageCheckResult Check(SafeFileHandle handle, ImageProbe probe, ImageRepairMode repair, IProgress<ImageProgress>? progress, CancellationToken cancellationToken) =>
        AllocationTableCheck.Run(handle, probe, Reader, repair, VhdxChecker.Walk, cancellationToken);
}
