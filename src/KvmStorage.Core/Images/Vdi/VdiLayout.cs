using System.Buffers.Binary;
using System.Text;
using KvmStorage.Core.Errors;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Vdi;

/// <summary>
/// A new VDI (VirtualBox's header 1.1, as qemu's block/vdi.c writes it): the 512-byte header, the block map at 512,
/// then 1 MiB blocks from a 1 MiB-aligned data offset. A dynamic image maps blocks in the order they were allocated
/// (the rest 0xFFFFFFFF, unallocated, reading as zeros); a static one (VirtualBox's fixed) maps every block in place.
/// </summary>
internal sealed class VdiLayout
{
    public const uint BlockSize = 1024 * 1024;
    public const uint BlockMapOffset = 512;

    /// <summary>qemu's limit (VDI_BLOCKS_IN_IMAGE_MAX): the block map of 32-bit entries must fit 32-bit offsets.</summary>
    public const uint MaxBlocks = 0x3fffffff;

    private const uint Signature = 0xBEDA107F;
    private const uint Version11 = 0x00010001;
    private const uint HeaderSize = 0x180;
    private const uint TypeDynamic = 1;
    private const uint TypeStatic = 2;

    private VdiLayout(ulong size, uint blocks, bool isFixed)
    {
        VirtualSize = size;
        Blocks = blocks;
        Fixed = isFixed;
        ulong mapBytes = ((ulong)blocks * 4 + 511) / 512 * 512;

        // Blocks start on a 1 MiB boundary (VirtualBox aligns its own data the same way), so guest blocks stay aligned on the host.
        DataOffset = (BlockMapOffset + mapBytes + BlockSize - 1) / BlockSize * BlockSize;
    }

    public ulong VirtualSize { get; }

    public uint Blocks { get; }

    public bool Fixed { get; }

    public ulong DataOffset { get; }

    public ulong EmptyLength => Fixed ? FullLength : DataOffset;

    public ulong FullLength => DataOffset + ((ulong)Blocks * BlockSize);

    public static VdiLayout For(ulong size, bool isFixed, string path)
    {
        ulong rounded = (size + 511) / 512 * 512;
        ulong blocks = (rounded + BlockSize - 1) / BlockSize;
        if (blocks > MaxBlocks || rounded < size)
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, ErrorIds.InvalidSize, $"A vdi image holds at most {(ulong)MaxBlocks * BlockSize} bytes.", path);
        }

        var layout = new VdiLayout(rounded, (uint)blocks, isFixed);
        return layout.DataOffset <= uint.MaxValue
            ? layout
            : throw new KvmStorageException(ErrorKind.InvalidArgument, ErrorIds.InvalidSize, "The vdi block map of so large a disk would not fit the header's 32-bit data offset.", path);
    }

    /// <summary>
    /// Writes the block map (a dynamic image's <paramref name="map"/>: each allocated block's index in the file, in
    /// block order; a static image maps every block in place) and then the header.
    /// </summary>
    public void WriteMetadata(SafeFileHandle handle, IReadOnlyList<(ulong Block, uint Index)> map)
    {
        ArgumentNullException.ThrowIfNull(map);
        const int Page = 64 * 1024;
        byte[] page = new byte[Page];
        ulong mapBytes = (ulong)Blocks * 4;
        int next = 0;
        for (ulong at = 0; at < mapBytes; at += Page)
        {
            int n = (int)Math.Min(Page, mapBytes - at);
            for (int i = 0; i < n; i += 4)
            {
                ulong block = (at + (ulong)i) / 4;
                uint entry = VdiHeader.Unallocated;
                if (Fixed)
                {
                    entry = (uint)block;
                }
                else if (next < map.Count && map[next].Block == block)
                {
                    entry = map[next++].Index;
                }

                BinaryPrimitives.WriteUInt32LittleEndian(page.AsSpan(i), entry);
            }

            RandomAccess.Write(handle, page.AsSpan(0, n), (long)(BlockMapOffset + at));
        }

        RandomAccess.Write(handle, Header(Fixed ? Blocks : (uint)map.Count), 0);
    }

    private byte[] Header(uint allocated)
    {
        byte[] h = new byte[VdiHeader.Length];
        Encoding.ASCII.GetBytes("<<< KvmStorage Virtual Disk Image >>>\n", h);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(0x40), Signature);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(0x44), Version11);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(0x48), HeaderSize);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(0x4C), Fixed ? TypeStatic : TypeDynamic);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(0x154), BlockMapOffset);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(0x158), checked((uint)DataOffset));
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(0x168), 512);
        BinaryPrimitives.WriteUInt64LittleEndian(h.AsSpan(0x170), VirtualSize);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(0x178), BlockSize);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(0x180), Blocks);
        BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(0x184), allocated);

        // The image's and its last modification's UUIDs; link and parent stay null (not a differencing image).
        Guid.NewGuid().TryWriteBytes(h.AsSpan(0x188));
        Guid.NewGuid().TryWriteBytes(h.AsSpan(0x198));
        return h;
    }
}
