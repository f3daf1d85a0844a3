using System.Globalization;
using System.Management.Automation;
using KvmStorage.Core.Sizes;

namespace KvmStorage.Infrastructure;

/// <summary>Lets a byte-count parameter take <c>8GB</c> (a number) as well as <c>'8G'</c> or <c>'512M'</c> (binary units).</summary>
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
                decimal d = Convert.ToDecimal(value, CultureInfo.InvariantCulture);
                if (d < 0 || d != decimal.Truncate(d))
                {
                    throw new ArgumentTransformationMetadataException($"A size must be a whole, non-negative number of bytes, not {value}.");
                }

                return (ulong)d;
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
