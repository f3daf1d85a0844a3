using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Check;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Vpc;

/// <summary>The VHD driver (qemu's block/vpc.c): read and check (no create or conversion).</summary>
internal sealed class VpcFormat : IImageFormat
{
    public IImageFormatReader Reader { get; } = new VpcReader();

    public ImageLayer OpenLayer(HostFile file, ImageInfo info) => VpcLayer.Open(file, info);

    public ImageCheckResult Check(SafeFileHandle handle, ImageProbe probe, ImageRepairMode repair, IProgress<ImageProgress>? progress, CancellationToken cancellationToken) =>
        AllocationTableCheck.Run(handle, probe, Reader, repair, VpcChecker.Walk, cancellationToken);
}
