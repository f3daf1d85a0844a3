using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Check;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Vdi;

/// <summary>The VDI driver (qemu's block/vdi.c): read and check (no create or conversion).</summary>
internal sealed class VdiFormat : IImageFormat
{
    public IImageFormatReader Reader { get; } = new VdiReader();

    public ImageLayer OpenLayer(HostFile file, ImageInfo info) => VdiLayer.Open(file, info);

    public ImageCheckResult Check(SafeFileHandle handle, ImageProbe probe, ImageRepairMode repair, IProgress<ImageProgress>? progress, CancellationToken cancellationToken) =>
        AllocationTableCheck.Run(handle, probe, Reader, repair, VdiChecker.Walk, cancellationToken);
}
