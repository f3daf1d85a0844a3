using System.Buffers.Binary;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using KvmStorage.Core.Errors;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Vmdk;

/// <summary>
/// Creates an empty monolithicSparse VMDK laid out byte for byte as <c>qemu-img create -f vmdk</c>
/// (block/vmdk.c vmdk_init_extent): version 1, flags 3 (newline detection, redundant GD), 64 KiB grains,
/// the descriptor embedded at sector 1, then the redundant GD with its grain tables, the primary GD
/// with its grain tables, and data from the next grain boundary.
/// </summary>
public sealed class VmdkWriter : IImageFormatWriter
{
    private const ulong GrainSectors = 128;
    private const uint GtesPerGt = 512;
    private const ulong DescriptorSectors = 20;

    /// <summary>Grain table entries are 32-bit sector numbers: beyond 2 TiB the file could not address its grains.</summary>
    public const ulong MaxVirtualSize = 2UL * 1024 * 1024 * 1024 * 1024;

    public ImageFormat Format => ImageFormat.Vmdk;

    public void Create(SafeFileHandle handle, string path, ImageCreateOptions options, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(handle);
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(options);
        cancellationToken.ThrowIfCancellationRequested();
        if (options.VirtualSize is not ulong requested || requested > MaxVirtualSize)
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, ErrorIds.InvalidSize, $"A vmdk image needs a virtual size of at most {MaxVirtualSize} bytes.", path);
        }

        // qemu rounds the size up to whole sectors.
        ulong size = (requested + 511) / 512 * 512;
        ulong capacity = size / 512;
        ulong grains = (capacity + GrainSectors - 1) / GrainSectors;
        ulong gtSectors = ((GtesPerGt * 4) + 511) / 512;
        ulong gtCount = (grains + GtesPerGt - 1) / GtesPerGt;
        ulong gdSectors = ((gtCount * 4) + 511) / 512;
        ulong rgdOffset = 1 + DescriptorSectors;
        ulong gdOffset = rgdOffset + gdSectors + (gtSectors * gtCount);
        ulong grainOffset = (gdOffset + gdSectors + (gtSectors * gtCount) + GrainSectors - 1) / GrainSectors * GrainSectors;

        var header = new VmdkSparseHeader(
            Version: 1,
            Flags: VmdkSparseHeader.FlagNewlineDetect | VmdkSparseHeader.FlagRedundantGd,
            Capacity: capacity,
            GrainSize: GrainSectors,
            DescriptorOffset: 1,
            DescriptorSize: DescriptorSectors,
            GtesPerGt: GtesPerGt,
            RedundantGdOffset: rgdOffset,
            GdOffset: gdOffset,
            OverHead: grainOffset,
            CompressAlgorithm: 0);

        ulong total = grainOffset * 512;
        byte[] sector = new byte[512];
        header.WriteTo(sector);
        byte[] descriptor = Encoding.ASCII.GetBytes(Descriptor(Path.GetFileName(path), size));

        // The grain tables are never written: extending the file leaves them as zeros (unallocated grains), as qemu's truncate does.
        RandomAccess.SetLength(handle, checked((long)total));
        RandomAccess.Write(handle, sector, 0);
        RandomAccess.Write(handle, descriptor, 512);
        WriteDirectory(handle, rgdOffset, gdSectors, gtSectors, gtCount, cancellationToken);
        WriteDirectory(handle, gdOffset, gdSectors, gtSectors, gtCount, cancellationToken);
        progress?.Report(new ImageProgress(total, total));
    }

    /// <summary>A grain directory whose entries point at the grain tables that follow it.</summary>
    private static void WriteDirectory(SafeFileHandle handle, ulong gdOffset, ulong gdSectors, ulong gtSectors, ulong gtCount, CancellationToken cancellationToken)
    {
        const int Chunk = 64 * 1024;
        ulong bytes = gdSectors * 512;
        byte[] buffer = new byte[Chunk];
        ulong entry = 0;
        for (ulong done = 0; done < bytes; done += Chunk)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int n = (int)Math.Min(Chunk, bytes - done);
            Array.Clear(buffer);
            for (int i = 0; i + 4 <= n && entry < gtCount; i += 4, entry++)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(buffer.AsSpan(i), checked((uint)(gdOffset + gdSectors + (entry * gtSectors))));
            }

            RandomAccess.Write(handle, buffer.AsSpan(0, n), checked((long)((gdOffset * 512) + done)));
        }
    }

    internal static string Descriptor(string fileName, ulong size, string createType = "monolithicSparse")
    {
        Span<byte> random = stackalloc byte[4];
        RandomNumberGenerator.Fill(random);
        uint cid = BinaryPrimitives.ReadUInt32LittleEndian(random);
        var inv = CultureInfo.InvariantCulture;
        return string.Create(inv,
            $"# Disk DescriptorFile\nversion=1\nCID={cid:x}\nparentCID=ffffffff\ncreateType=\"{createType}\"\n\n" +
            $"# Extent description\nRW {size / 512} SPARSE \"{fileName}\"\n\n" +
            $"# The Disk Data Base\n#DDB\n\n" +
            $"ddb.virtualHWVersion = \"4\"\nddb.geometry.cylinders = \"{size / (63 * 16 * 512)}\"\nddb.geometry.heads = \"16\"\n" +
            $"ddb.geometry.sectors = \"63\"\nddb.adapterType = \"ide\"\nddb.toolsVersion = \"2147483647\"\n");
    }
}
