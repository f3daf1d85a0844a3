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
        var layout = new VmdkSparseLayout(size / 512);
        VmdkSparseHeader header = layout.Header(1, VmdkSparseHeader.FlagNewlineDetect | VmdkSparseHeader.FlagRedundantGd, 0);
        ulong total = layout.GrainOffset * 512;
        byte[] sector = new byte[512];
        header.WriteTo(sector);
        byte[] descriptor = Encoding.ASCII.GetBytes(Descriptor(Path.GetFileName(path), size));

        // The grain tables are never written: extending the file leaves them as zeros (unallocated grains), as qemu's truncate does.
        RandomAccess.SetLength(handle, checked((long)total));
        RandomAccess.Write(handle, sector, 0);
        RandomAccess.Write(handle, descriptor, 512);
        layout.WriteDirectory(handle, layout.RedundantGdOffset, cancellationToken);
        layout.WriteDirectory(handle, layout.GdOffset, cancellationToken);
        progress?.Report(new ImageProgress(total, total));
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
