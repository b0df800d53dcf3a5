package io.otbridge.flink;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.table.functions.AggregateFunction;
import org.apache.flink.types.Row;

/**
 * {@code last_non_null(x)}, as jobs/downsample registers it: the last non-null value in
 * arrival order, as the built-in LAST_VALUE, for DOUBLE and STRING, with a {@link #merge}
 * (see {@link FirstValue}).
 */
@FunctionHint(input = @DataTypeHint("DOUBLE"), output = @DataTypeHint("DOUBLE"),
    accumulator = @DataTypeHint("ROW<v DOUBLE>"))
@FunctionHint(input = @DataTypeHint("STRING"), output = @DataTypeHint("STRING"),
    accumulator = @DataTypeHint("ROW<v STRING>"))
public class LastValue extends AggregateFunction<Object, Row> {
  private static final long serialVersionUID = 1L;

  @Override
  public Row createAccumulator() {
    return new Row(1);
  }

  public void accumulate(Row acc, Object value) {
    if (value != null) {
      acc.setField(0, value);
    }
  }

  public void merge(Row acc, Iterable<Row> others) {
    for (Row other : others) {
      if (other.getField(0) != null) {
        acc.setField(0, other.getField(0));
      }
    }
  }

  public void resetAccumulator(Row acc) {
    acc.setField(0, null);
  }

  @Override
  public Object getValue(Row acc) {
    return acc.getField(0);
  }
}
