using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Convert;

/// <summary>Gathers small writes that land back to back in the file into one large write.</summary>
internal sealed class WriteCoalescer(SafeFileHandle handle, int capacity)
{
    private readonly byte[] buffer = new byte[capacity];
    private ulong start;
    private int length;

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (length > 0 && (offset != start + (ulong)length || length + data.Length > buffer.Length))
        {
            Flush();
        }

        if (data.Length > buffer.Length)
        {
            RandomAccess.Write(handle, data, (long)offset);
            return;
        }

        if (length == 0)
        {
            start = offset;
        }

        data.CopyTo(buffer.AsSpan(length));
        length += data.Length;
    }

    public void Flush()
    {
        if (length > 0)
        {
            RandomAccess.Write(handle, buffer.AsSpan(0, length), (long)start);
            length = 0;
        }
    }
}
