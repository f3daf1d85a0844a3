using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Block;

/// <summary>
/// One image file opened read-only for positional reads. Data reads past the end of the file return
/// zeros (qemu's protocol layer does the same); metadata reads past it are malformed images.
/// </summary>
internal sealed class HostFile : IDisposable
{
    private readonly SafeFileHandle handle;
    private int seekUnsupported;

    private HostFile(string path, SafeFileHandle handle, ulong length)
    {
        Path = path;
        this.handle = handle;
        Length = length;
    }

    public string Path { get; }

    public ulong Length { get; }

    /// <summary>
    /// Opens <paramref name="path"/> for reading. <paramref name="noReadAhead"/> asks the kernel not to read ahead
    /// (posix_fadvise RANDOM): a map reads only tables, and pages read ahead into the cache would turn the file's
    /// unwritten (fallocated) ranges from holes into data for lseek(SEEK_HOLE), which qemu-img map, reading nothing,
    /// would not see.
    /// </summary>
    public static HostFile Open(string path, bool noReadAhead = false)
    {
        SafeFileHandle handle;
        try
        {
            handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw ImageErrors.FromIo(path, e);
        }

        if (noReadAhead)
        {
            // Advice only: a file system that ignores it still reads correctly.
            _ = NativeMethods.posix_fadvise(handle, 0, 0, NativeMethods.POSIX_FADV_RANDOM);
        }

        try
        {
            return new HostFile(path, handle, (ulong)RandomAccess.GetLength(handle));
        }
        catch (IOException e)
        {
            handle.Dispose();
            throw ImageErrors.FromIo(path, e);
        }
    }

    /// <summary>Reads guest data stored at <paramref name="offset"/>; bytes beyond the end of the file read as zeros.</summary>
    public void ReadData(ulong offset, Span<byte> buffer)
    {
        if (offset >= Length)
        {
            buffer.Clear();
            return;
        }

        ulong available = Length - offset;
        if ((ulong)buffer.Length > available)
        {
            buffer[(int)available..].Clear();
            buffer = buffer[..(int)available];
        }

        try
        {
            // The file may shrink under us: what is gone reads as zeros, as it would in qemu.
            PositionalFile.ReadZeroPadded(handle, buffer, offset);
        }
        catch (IOException e)
        {
            throw ImageErrors.FromIo(Path, e);
        }
    }

    /// <summary>Reads metadata that must lie wholly inside the file.</summary>
    public byte[] ReadMetadata(ulong offset, int length, string what)
    {
        if (length < 0 || offset > Length || (ulong)length > Length - offset)
        {
            throw BlockErrors.Mapping(Path, $"the {what} at offset 0x{offset:x} ({length} bytes) lies beyond the end of the file ({Length} bytes).");
        }

        byte[] buffer = new byte[length];
        ReadData(offset, buffer);
        return buffer;
    }

    /// <summary>
    /// Whether the file holds data at <paramref name="offset"/> (SEEK_DATA/SEEK_HOLE), and for how many bytes
    /// (at most <paramref name="maxLength"/>). The end of the file counts as a hole.
    /// </summary>
    public (bool Data, ulong Length) Probe(ulong offset, ulong maxLength)
    {
        if (offset >= Length)
        {
            return (false, maxLength);
        }

        ulong untilEnd = Math.Min(maxLength, Length - offset);
        if (Volatile.Read(ref seekUnsupported) != 0 || offset > long.MaxValue)
        {
            return (true, untilEnd);
        }

        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            int fd = (int)handle.DangerousGetHandle();
            long data = NativeMethods.lseek(fd, (long)offset, NativeMethods.SEEK_DATA);
            if (data < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno == NativeMethods.ENXIO)
                {
                    // No data after offset: a hole up to the end of the file, and zeros beyond.
                    return (false, maxLength);
                }

                Volatile.Write(ref seekUnsupported, 1);
                return (true, untilEnd);
            }

            if ((ulong)data > offset)
            {
                return (false, Math.Min(maxLength, (ulong)data - offset));
            }

            long hole = NativeMethods.lseek(fd, (long)offset, NativeMethods.SEEK_HOLE);
            if (hole < 0 || (ulong)hole <= offset)
            {
                return (true, untilEnd);
            }

            return (true, Math.Min(untilEnd, (ulong)hole - offset));
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    public void Dispose() => handle.Dispose();
}

/// <summary>What a layer holds at a guest offset (internal to the block readers).</summary>
internal enum RunKind
{
    /// <summary>Stored uncompressed at <see cref="LayerRun.HostOffset"/> of the layer's file.</summary>
    Data,

    /// <summary>Reads as zeros.</summary>
    Zero,

    /// <summary>Not allocated in this layer: the backing file (or zeros) shows through.</summary>
    Unallocated,

    /// <summary>Allocated, but the layer reads it its own way (compressed clusters, other extent files).</summary>
    Special,
}

/// <summary>A run of one kind starting at the queried guest offset; <see cref="Tag"/> is the layer's own (L2 entry, extent index...).</summary>
internal readonly record struct LayerRun(ulong Length, RunKind Kind, ulong HostOffset = 0, ulong Tag = 0)
{
    /// <summary>
    /// The run that starts at <paramref name="offset"/> in a layer mapped by equal blocks (clusters, grains): the first
    /// block's kind, extended over the blocks that follow while they are of the same kind and, for data, lie right after
    /// it in the file. <paramref name="classify"/> gives block <c>n</c>'s kind and host offset (of its start); a Special
    /// block is a run of its own, at its block's host offset.
    /// </summary>
    // Loops over every entry or unit: optimised on first use (see Qcow2Checker.Analysis.CheckL2).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static LayerRun OverBlocks(ulong offset, ulong maxLength, ulong blockSize, ulong blockCount, Func<ulong, (RunKind Kind, ulong Host)> classify)
    {
        ulong block = offset / blockSize;
        ulong inBlock = offset % blockSize;
        (RunKind kind, ulong host) = classify(block);
        ulong length = blockSize - inBlock;
        if (kind == RunKind.Special)
        {
            return new LayerRun(Math.Min(length, maxLength), kind, host);
        }

        ulong expected = host + blockSize;
        for (ulong b = block + 1; length < maxLength && b < blockCount; b++)
        {
            (RunKind nextKind, ulong nextHost) = classify(b);
            if (nextKind != kind || (kind == RunKind.Data && nextHost != expected))
            {
                break;
            }

            length += blockSize;
            expected += blockSize;
        }

        return new LayerRun(Math.Min(length, maxLength), kind, kind == RunKind.Data ? host + inBlock : 0);
    }
}

/// <summary>
/// A layer's block status in qemu's terms: data, zeros, both (preallocated space that reads as zeros) or neither (left to
/// the backing file); where in the layer's file (or in <see cref="In"/>, another file of the layer: a vmdk extent) the
/// run lies, when the format says; and whether that file's own holes refine it (qemu's <c>BDRV_BLOCK_RECURSE</c>).
/// </summary>
internal readonly record struct LayerStatus(ulong Length, bool Data = false, bool Zero = false, bool OffsetValid = false, ulong Offset = 0, bool Recurse = false, HostFile? In = null)
{
    public static LayerStatus DataAt(ulong length, ulong offset) => new(length, Data: true, OffsetValid: true, Offset: offset);
}

/// <summary>One image of a backing chain: maps guest offsets to runs and reads allocated runs.</summary>
internal abstract class ImageLayer : IDisposable
{
    protected ImageLayer(HostFile file, ulong size)
    {
        File = file;
        Size = size;
    }

    public HostFile File { get; }

    public ulong Size { get; }

    /// <summary>
    /// The run that starts at <paramref name="offset"/> (below <see cref="Size"/>), at most <paramref name="maxLength"/>
    /// (which stays within <see cref="Size"/>) and at least one byte long. Reads metadata only.
    /// </summary>
    public abstract LayerRun Map(ulong offset, ulong maxLength);

    /// <summary>Reads the start of a Data or Special run returned by <see cref="Map"/> for <paramref name="offset"/>.</summary>
    public virtual void ReadRun(ulong offset, in LayerRun run, Span<byte> destination) => File.ReadData(run.HostOffset, destination);

    /// <summary>
    /// What the format's own block status says of the run at <paramref name="offset"/> (qemu's <c>bdrv_co_block_status</c>
    /// of the driver, before the generic layer adds what backing files and the file below tell): by default read off
    /// <see cref="Map"/>, data with its host offset, compressed data without one, zeros, or nothing.
    /// </summary>
    public virtual LayerStatus Status(ulong offset, ulong maxLength)
    {
        LayerRun run = Map(offset, maxLength);
        return run.Kind switch
        {
            RunKind.Data => LayerStatus.DataAt(run.Length, run.HostOffset),
            RunKind.Special => new LayerStatus(run.Length, Data: true),
            RunKind.Zero => new LayerStatus(run.Length, Zero: true),
            _ => new LayerStatus(run.Length),
        };
    }

    /// <summary>
    /// Whether the format has backing files (qemu's <c>supports_backing</c>): a range such a layer leaves unallocated
    /// reads as zeros when nothing lies below it.
    /// </summary>
    public virtual bool SupportsBacking => false;

    public virtual void Dispose() => File.Dispose();
}
