using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Raw;

/// <summary>Guest writes into a raw file: data where it is written, holes (or written zeros) where it must read as zeros.</summary>
internal sealed class RawDataWriter : IImageDataWriter
{
    private const int ZeroChunk = 16 * 1024 * 1024;

    private readonly SafeFileHandle handle;
    private readonly string path;

    public RawDataWriter(string path, ulong minimumSize)
    {
        this.path = path;
        handle = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
        if ((ulong)RandomAccess.GetLength(handle) < minimumSize)
        {
            // Grows sparsely: the new part reads as zeros, as the overlay of a commit read it past the old end.
            RandomAccess.SetLength(handle, (long)minimumSize);
        }
    }

    public long VirtualSize => RandomAccess.GetLength(handle);

    /// <summary>A raw file has no allocation unit of its own; a sector is the guest's.</summary>
    public int ClusterSize => 512;

    public bool HasBackingFile => false;

    public void Write(long guestOffset, ReadOnlySpan<byte> data) => RandomAccess.Write(handle, data, guestOffset);

    public void WriteZeroes(long guestOffset, long length)
    {
        // A hole reads as zeros and costs nothing; file systems that cannot punch get written zeros.
        if (PositionalFile.TryPunchHole(handle, (ulong)guestOffset, (ulong)length))
        {
            return;
        }

        byte[] zeros = new byte[Math.Min((ulong)length, ZeroChunk)];
        for (ulong done = 0; done < (ulong)length; done += (ulong)zeros.Length)
        {
            RandomAccess.Write(handle, zeros.AsSpan(0, (int)Math.Min((ulong)zeros.Length, (ulong)length - done)), guestOffset + (long)done);
        }
    }

    /// <summary>A raw file has no backing file to read through to.</summary>
    public void DiscardAll() =>
        throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedOperation, path, "a raw image has no backing file to read through to.");

    public void Flush() => PositionalFile.Flush(handle);

    public void Dispose() => handle.Dispose();
}
