using System.Globalization;
using System.Management.Automation;
using KvmStorage.Core.Sizes;

namespace KvmStorage.Infrastructure;

/// <summary>Lets a byte-count parameter take <c>8GB</c> or <c>2.2TB</c> (numbers) as well as <c>'8G'</c> or <c>'2.2T'</c> (binary units); fractions are cut to whole bytes as qemu-img does.</summary>
[AttributeUsage(AttributeTargets.Property | AttributeTargets.Field)]
public sealed class SizeTransformationAttribute : ArgumentTransformationAttribute
{
    public override object Transform(EngineIntrinsics engineIntrinsics, object inputData)
    {
        object value = inputData is PSObject pso ? pso.BaseObject : inputData;
        switch (value)
        {
            case string text:
                return ByteSize.Parse(text);
            case double or float or decimal:
                // 2.2TB is a double: cut to whole bytes as qemu-img cuts '2.2T' (creation rounds up to 512-byte sectors).
                decimal d = Convert.ToDecimal(value, CultureInfo.InvariantCulture);
                if (d < 0 || d > ulong.MaxValue)
                {
                    throw new ArgumentTransformationMetadataException($"A size must be a non-negative number of bytes, not {value}.");
                }

                return (ulong)decimal.Truncate(d);
            case sbyte or short or int or long:
                long l = Convert.ToInt64(value, CultureInfo.InvariantCulture);
                if (l < 0)
                {
                    throw new ArgumentTransformationMetadataException($"A size cannot be negative ({l}).");
                }

                return (ulong)l;
            default:
                return value;
        }
    }
}
