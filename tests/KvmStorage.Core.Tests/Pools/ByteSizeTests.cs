using KvmStorage.Core.Errors;
using KvmStorage.Core.Sizes;
using Xunit;

namespace KvmStorage.Core.Tests.Pools;

public class ByteSizeTests
{
    [Theory]
    [InlineData("0", 0UL)]
    [InlineData("512", 512UL)]
    [InlineData("512B", 512UL)]
    [InlineData("1K", 1024UL)]
    [InlineData("1KiB", 1024UL)]
    [InlineData("512M", 536870912UL)]
    [InlineData("8G", 8589934592UL)]
    [InlineData("8gb", 8589934592UL)]
    [InlineData("1.5G", 1610612736UL)]
    [InlineData("2T", 2199023255552UL)]
    [InlineData("2.2T", 2418925581107UL)] // qemu-img create ... 2.2T: the same count, before rounding up to sectors
    [InlineData("1.0000001K", 1024UL)]
    [InlineData(" 4 GiB ", 4294967296UL)]
    [InlineData("15E", 17293822569102704640UL)]
    public void Parses_binary_units(string text, ulong expected) => Assert.Equal(expected, ByteSize.Parse(text));

    [Theory]
    [InlineData("")]
    [InlineData("-1G")]
    [InlineData("+1G")]
    [InlineData("8X")]
    [InlineData("G")]
    [InlineData("1.1B")]
    [InlineData("16E")]
    [InlineData("eight")]
    public void Refuses_what_is_not_a_size(string text)
    {
        var ex = Assert.Throws<KvmStorageException>(() => ByteSize.Parse(text));
        Assert.Equal(ErrorIds.InvalidSize, ex.ErrorId);
    }

    [Theory]
    [InlineData(0UL, "0 B")]
    [InlineData(1023UL, "1023 B")]
    [InlineData(8589934592UL, "8 GiB")]
    [InlineData(1610612736UL, "1.5 GiB")]
    public void Formats_for_people(ulong bytes, string expected) => Assert.Equal(expected, ByteSize.Format(bytes));
}
