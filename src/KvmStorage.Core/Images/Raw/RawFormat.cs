using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Check;
using KvmStorage.Core.Images.Convert;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Raw;

/// <summary>The raw driver: the file is the disk. Also the fallback for every file no other format recognises.</summary>
internal sealed class RawFormat : IImageFormat
{
    public IImageFormatReader Reader { get; } = new RawReader();

    public IImageFormatWriter? Writer { get; } = new RawImageWriter();

    public ConvertOutput? ConvertOutput { get; } = new Output();

    public bool WritesData => true;

    public ImageLayer OpenLayer(HostFile file, ImageInfo info) => new RawLayer(file, info.VirtualSize, 0);

    public IImageDataWriter OpenDataWriter(string path, ulong minimumSize, BlockOpenOptions backingOptions) => new RawDataWriter(path, minimumSize);

    /// <summary>Raw images pass with nothing to check.</summary>
    public ImageCheckResult Check(SafeFileHandle handle, ImageProbe probe, ImageRepairMode repair, IProgress<ImageProgress>? progress, CancellationToken cancellationToken) =>
        new() { Path = probe.Path, ImageFormat = ImageFormat.Raw, Checked = false };

    public void Resize(SafeFileHandle handle, string path, ulong newSize, ImageResizeOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken) =>
        RawResizer.Resize(handle, path, newSize, options, progress, cancellationToken);

    /// <summary>Before a compact copy the holes are not punched: the sparse copy leaves the zeros out anyway.</summary>
    public ulong FreeZeros(SafeFileHandle handle, string path, bool compactNext, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        if (!compactNext)
        {
            RawOptimizer.PunchZeroRanges(handle, path, progress, cancellationToken);
        }

        return 0;
    }

    public void WriteCompactCopy(SafeFileHandle source, SafeFileHandle target, string path, IProgress<ImageProgress>? progress, CancellationToken cancellationToken) =>
        RawOptimizer.CopySparse(source, target, path, progress, cancellationToken);

    /// <summary>A raw output: holes wherever the source reads as zeros, unless preallocated.</summary>
    private sealed class Output : ConvertOutput
    {
        public override string Name => "raw image";

        public override int Unit(ConvertOptions options) => RawConvertTarget.Block;

        public override ulong EstimateSize(ulong size, ulong data, ConvertOptions options) =>
            options.Preallocation is Preallocation.Falloc or Preallocation.Full ? size : data;

        public override ConvertTarget CreateTarget(SafeFileHandle handle, string tempPath, string finalPath, ulong size, ConvertOptions options) =>
            new RawConvertTarget(handle, tempPath, size, options.Preallocation);
    }
}
