using System.Numerics;
using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Check;
using KvmStorage.Core.Images.Convert;
using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>The qcow2 driver (qemu's block/qcow2*.c): every operation the engine has, all in this folder.</summary>
internal sealed class Qcow2Format : IImageFormat
{
    private const uint DefaultClusterSize = 65536;

    public IImageFormatReader Reader { get; } = new Qcow2Reader();

    public IImageFormatWriter? Writer { get; } = new Qcow2ImageWriter();

    public ConvertOutput? ConvertOutput { get; } = new Output();

    public bool WritesData => true;

    public bool SetsBacking => true;

    public ImageLayer OpenLayer(HostFile file, ImageInfo info) => Qcow2Layer.Open(file, info);

    public ImageLayer OpenLayer(HostFile file, ImageInfo info, ImagePassphrase? passphrase) => Qcow2Layer.Open(file, info, passphrase);

    public IImageDataWriter OpenDataWriter(string path, ulong minimumSize, BlockOpenOptions backingOptions)
    {
        Qcow2DataWriter writer = Qcow2DataWriter.Open(path, backingOptions);

        // The guest sees whole sectors of the header's size (qemu's total_sectors).
        if (((ulong)writer.VirtualSize & ~511UL) >= minimumSize)
        {
            return writer;
        }

        writer.Dispose();
        using (SafeFileHandle handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete))
        {
            Qcow2Resizer.Resize(handle, path, minimumSize, new ImageResizeOptions());
        }

        return Qcow2DataWriter.Open(path, backingOptions);
    }

    public void SetBacking(SafeFileHandle handle, string path, string? backingFile, string? backingFormat) =>
        Qcow2BackingEditor.SetBacking(handle, path, backingFile, backingFormat);

    public ImageCheckResult Check(SafeFileHandle handle, ImageProbe probe, ImageRepairMode repair, IProgress<ImageProgress>? progress, CancellationToken cancellationToken) =>
        new Qcow2Checker(handle, probe.Path, progress, cancellationToken).Run(repair);

    public ImageAmendPlan PlanAmend(SafeFileHandle handle, string path, ImageAmendOptions options) =>
        Qcow2Amender.Open(handle, path).Plan(options).Public;

    public void Amend(SafeFileHandle handle, string path, ImageAmendOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        Qcow2Amender amender = Qcow2Amender.Open(handle, path);
        amender.Run(amender.Plan(options), progress, cancellationToken);
    }

    public void Resize(SafeFileHandle handle, string path, ulong newSize, ImageResizeOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        if (options.Preallocation != Preallocation.Off)
        {
            FileSystemLimits.RequireFits(path, newSize);
        }

        Qcow2Resizer.Resize(handle, path, newSize, options);
    }

    public ulong FreeZeros(SafeFileHandle handle, string path, bool compactNext, IProgress<ImageProgress>? progress, CancellationToken cancellationToken) =>
        Qcow2ZeroClusters.Free(handle, path, progress, cancellationToken);

    public void WriteCompactCopy(SafeFileHandle source, SafeFileHandle target, string path, IProgress<ImageProgress>? progress, CancellationToken cancellationToken) =>
        Qcow2Compactor.Write(source, target, path, progress, cancellationToken);

    /// <summary><c>qemu-img convert -O qcow2</c>: appended (or preallocated) clusters, optionally compressed, optionally an overlay.</summary>
    private sealed class Output : ConvertOutput
    {
        public override string Name => "qcow2 image";

        public override bool TakesCompress => true;

        public override bool TakesMetadataPreallocation => true;

        public override bool TakesBackingFile => true;

        public override bool TakesEncryption => true;

        public override int Unit(ConvertOptions options) => (int)(options.ClusterSize ?? DefaultClusterSize);

        public override void Validate(ulong size, string path, ConvertOptions options)
        {
            uint cs = options.ClusterSize ?? DefaultClusterSize;
            if (cs < 512 || cs > 2 * 1024 * 1024 || !BitOperations.IsPow2(cs))
            {
                throw Invalid(path, $"The cluster size {cs} must be a power of two from 512 to 2 MiB.");
            }

            if (options.CompressionType == CompressionType.Zstd && options.Compress && Qcow2ImageWriter.ParseCompat(options.Compat) < 3)
            {
                throw Invalid(path, "zstd compression needs compat 1.1 (qcow2 version 3).");
            }

            _ = Qcow2ImageWriter.ParseCompat(options.Compat);
            _ = Qcow2Layout.Compute(size, BitOperations.Log2(cs), 16, mapAllData: true, path);
        }

        public override ulong EstimateSize(ulong size, ulong data, ConvertOptions options)
        {
            uint cs = options.ClusterSize ?? DefaultClusterSize;
            ulong crypto = options.Encryption is { } e ? Luks.LuksHeader.LayoutSector((uint)e.Luks.KeyBytes, Luks.LuksHeader.SlotCount) * 512UL : 0;
            Qcow2Layout full = Qcow2Layout.Compute(size, BitOperations.Log2(cs), 16, mapAllData: true, "", crypto);
            ulong metadata = (full.TotalClusters - full.DataClusters) * cs;
            return options.Preallocation is Preallocation.Falloc or Preallocation.Full
                ? metadata + (full.DataClusters * cs)
                : metadata + data;
        }

        public override ConvertTarget CreateTarget(SafeFileHandle handle, string tempPath, string finalPath, ulong size, ConvertOptions options)
        {
            uint cs = options.ClusterSize ?? DefaultClusterSize;
            if (options.Preallocation != Preallocation.Off)
            {
                return new Qcow2PreallocatedConvertTarget(handle, tempPath, size, cs, options.Compat, options.Preallocation);
            }

            return new Qcow2ConvertTarget(
                handle,
                tempPath,
                size,
                cs,
                Qcow2ImageWriter.ParseCompat(options.Compat),
                options.Compress ? options.CompressionType : null,
                options.BackingFile,
                options.BackingFile is null ? null : options.BackingFormat,
                options.Encryption);
        }
    }
}
